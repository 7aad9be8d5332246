"""Documents longer than the window: token lengths, head_tail and chunks, per-document scoring everywhere."""

import random
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from finetune.errors import FinetuneError
from finetune.tasks.windows import LongText, Windowing, encode_windows, head_tail_spans, window_positions, window_spans
from tests.helpers import (
    SHARED_DATA,
    TINY_TRAINING,
    TOPICS,
    cli,
    compose_config,
    read_json,
    run_py,
    save_tokenizer,
    topic_rows,
    write_csv,
)


# --- windows on token ids, against hand-made cases ------------------------------------------
def test_windows_advance_by_size_less_stride_and_the_last_reaches_the_end():
    assert window_spans(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert window_spans(10, 4, 0) == [(0, 4), (4, 8), (8, 10)]  # no overlap: the last window is short
    assert window_spans(11, 4, 1) == [(0, 4), (3, 7), (6, 10), (9, 11)]
    assert window_spans(4, 4, 2) == [(0, 4)] and window_spans(1, 4, 2) == [(0, 1)]  # a text that fits: one window


def test_the_cap_keeps_windows_evenly_spread_with_the_first_and_the_last():
    assert window_spans(10, 4, 2, cap=2) == [(0, 4), (6, 10)]
    assert window_spans(10, 4, 2, cap=3) == [(0, 4), (4, 8), (6, 10)]
    assert window_spans(10, 4, 2, cap=1) == [(0, 4)]
    assert window_spans(10, 4, 2, cap=9) == window_spans(10, 4, 2)


def test_head_tail_keeps_the_first_k_and_the_last_tokens():
    assert head_tail_spans(10, 6, 2) == [(0, 2), (6, 10)]
    assert head_tail_spans(10, 6, 0) == [(0, 0), (4, 10)]
    assert head_tail_spans(5, 6, 2) == [(0, 5)]


def test_positions_keep_the_special_tokens_and_window_only_the_second_text_of_a_pair():
    single = [None, 0, 0, 0, 0, 0, 0, None]  # [CLS] six tokens [SEP]
    chunks = Windowing(LongText(strategy="chunks", stride=1), max_length=5)
    assert window_positions(single, chunks) == [[0, 1, 2, 3, 7], [0, 3, 4, 5, 7], [0, 5, 6, 7]]
    head_tail = Windowing(LongText(strategy="head_tail", head_tokens=1), max_length=5)
    assert window_positions(single, head_tail) == [[0, 1, 5, 6, 7]]
    xlnet = [0, 0, 0, 0, 0, None, None]  # XLNet: the special tokens at the end
    assert window_positions(xlnet, Windowing(LongText(strategy="chunks", stride=0), max_length=4)) == [
        [0, 1, 5, 6],
        [2, 3, 5, 6],
        [4, 5, 6],
    ]
    pair = [None, 0, 0, None, 1, 1, 1, 1, 1, None]  # [CLS] a a [SEP] b b b b b [SEP]
    assert window_positions(pair, Windowing(LongText(strategy="chunks", stride=1), max_length=9)) == [
        [0, 1, 2, 3, 4, 5, 6, 7, 9],
        [0, 1, 2, 3, 7, 8, 9],
    ]
    # a first text that would leave the second less than half the window is cut at its end
    assert window_positions(pair, Windowing(LongText(strategy="chunks", stride=1), max_length=8)) == [
        [0, 1, 3, 4, 5, 6, 7, 9],
        [0, 1, 3, 7, 8, 9],
    ]


def test_encoded_windows_read_as_the_tokenizer_writes_texts_and_pairs(tmp_path):
    from transformers import AutoTokenizer

    save_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    text = "treaty minister election border embassy rebels match coach"
    features, documents = encode_windows(
        tokenizer, [[text, "goal"]], Windowing(LongText(strategy="chunks", stride=2), max_length=6)
    )
    assert [tokenizer.decode(ids) for ids in features["input_ids"]] == [
        "[CLS] treaty minister election border [SEP]",
        "[CLS] election border embassy rebels [SEP]",
        "[CLS] embassy rebels match coach [SEP]",
        "[CLS] goal [SEP]",
    ]
    assert documents == [0, 0, 0, 1] and all(
        len(m) == len(i) for m, i in zip(features["attention_mask"], features["input_ids"])
    )
    features, documents = encode_windows(
        tokenizer,
        [["dog cat"], ["tree river city man woman child"]],
        Windowing(LongText(strategy="head_tail", head_tokens=1), max_length=9),
    )
    assert [tokenizer.decode(ids) for ids in features["input_ids"]] == [
        "[CLS] dog cat [SEP] tree man woman child [SEP]"
    ]
    assert features["token_type_ids"] == [[0, 0, 0, 0, 1, 1, 1, 1, 1]]
    with pytest.raises(FinetuneError, match=r"task.long_text.stride=4 leaves no step: a window holds 4 text tokens"):
        encode_windows(tokenizer, [[text]], Windowing(LongText(strategy="chunks", stride=4), max_length=6))


# --- settings refused in one line, before any work ------------------------------------------
@pytest.mark.parametrize(
    "override, message",
    [
        ("task.long_text.stride=128", "task.long_text.stride=128 must be at least 0 and less than task.max_length=128"),
        (
            "task.long_text.head_tokens=200",
            "task.long_text.head_tokens=200 must be at least 0 and less than task.max_length=128",
        ),
        ("task.long_text.aggregation=median", "task.long_text.aggregation='median' is not one of mean, max, vote."),
        (
            "task.long_text.strategy=middle",
            "task.long_text.strategy='middle' is not one of truncate, head_tail, chunks.",
        ),
        (
            "task.long_text.max_train_windows=0",
            "task.long_text.max_train_windows=0 must be null (every window) or at least 1.",
        ),
    ],
)
def test_bad_long_text_settings_are_refused_in_one_line(override, message):
    from finetune.config.checks import validate

    with pytest.raises(FinetuneError) as error:
        validate(compose_config("task=imdb", override))
    assert message in str(error.value).splitlines()[1]


def test_the_imdb_preset_reads_the_hub_unless_given_files():
    from finetune.config.checks import validate

    for cfg in (compose_config("task=imdb"), compose_config("experiment=long_text")):
        validate(cfg)
        assert cfg.task.path == "stanfordnlp/imdb" and not any(cfg.task.data_files.values())
    local = compose_config("task=imdb", "task.data_files.train=imdb/train.csv", "task.data_files.test=imdb/test.csv")
    assert local.task.data_files.train == "imdb/train.csv"  # local files, where given, are what the task reads


def test_a_regression_task_aggregates_by_the_mean_only():
    from finetune.config.checks import validate

    with pytest.raises(FinetuneError, match="a regression task aggregates its windows by their mean score"):
        validate(compose_config("task=stsb", "task.long_text.aggregation=max"))


# --- aggregation per document, by each kind ---------------------------------------------------
def test_each_kind_aggregates_a_documents_windows():
    from finetune.tasks.registry import KINDS

    single = KINDS["single_label"](["a", "b"])
    logits = np.log(np.array([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.9, 0.1]]))
    documents = [0, 0, 0, 1]
    probabilities = lambda how: single.scores(single.aggregate(logits, documents, how))  # noqa: E731
    assert np.allclose(probabilities("mean"), [[0.5, 0.5], [0.9, 0.1]])
    assert np.allclose(probabilities("max"), [[0.8 / 1.5, 0.7 / 1.5], [0.9, 0.1]])
    assert np.allclose(probabilities("vote"), [[1 / 3, 2 / 3], [1, 0]])  # each window's class, counted
    multi = KINDS["multi_label"](["a", "b"])
    sigmoid = np.array([[0.9, 0.2], [0.3, 0.4]])
    assert np.allclose(multi.scores(multi.aggregate(np.log(sigmoid / (1 - sigmoid)), [5, 5], "mean")), [[0.6, 0.3]])
    regression = KINDS["regression"]()
    assert np.allclose(regression.aggregate(np.array([[1.0], [2.0], [4.0]]), [1, 0, 1], "mean"), [[2.0], [2.5]])
    assert (
        single.aggregate(logits, [3, 1, 2, 0], "mean") is not logits
    )  # one window each: the logits as they are, in document order
    assert np.array_equal(single.aggregate(logits, [3, 1, 2, 0], "mean"), logits[[3, 1, 2, 0]])


def test_per_document_metrics_equal_those_computed_by_hand_from_the_window_logits():
    from types import SimpleNamespace

    from finetune.tasks.registry import KINDS
    from finetune.training.documents import DocumentMetrics

    kind = KINDS["single_label"](["negative", "positive"], ["accuracy", "f1"])
    documents = [0, 0, 1, 1, 1, 2]  # in the split's order
    labels = np.array([1, 1, 0, 0, 0, 1])
    window_p1 = np.array([0.2, 0.9, 0.6, 0.7, 0.1, 0.4])  # P(positive) of each window
    # by hand: document means 0.55, 0.4667, 0.4 -> positive, negative, negative; truth positive, negative, positive
    order = [5, 3, 0, 1, 4, 2]  # the Trainer evaluated longest window first
    metrics = DocumentMetrics(kind, documents, "mean", eval_order=lambda: order)
    logits = np.log(np.stack([1 - window_p1, window_p1], axis=1))[order]
    result = metrics(SimpleNamespace(predictions=logits, label_ids=labels[order]))
    assert result["accuracy"] == pytest.approx(2 / 3) and result["f1"] == pytest.approx(
        2 / 3
    )  # precision 1, recall 1/2


# --- no document split between train and validation -------------------------------------------
def long_documents(n: int, seed: int, label_ids: bool = False) -> List[Dict]:
    """Documents of 3 to 6 topic texts of one class: 30 to 60 tokens, longer than the tiny runs' 24-token window."""
    rng = random.Random(seed)
    names = list(TOPICS)
    rows = []
    for i in range(n):
        label = names[i % 4]
        parts = [r["text"] for r in topic_rows(40, seed=seed * 1000 + i) if r["label"] == label][: rng.randint(3, 6)]
        rows.append({"text": " ".join(parts), "label": names.index(label) if label_ids else label})
    return rows


@pytest.fixture(scope="module")
def long_files(tmp_path_factory) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp("long")
    return {
        "train": write_csv(folder / "train.csv", long_documents(120, seed=5)),
        "test": write_csv(folder / "test.csv", long_documents(24, seed=6, label_ids=True)),
    }


def test_every_window_of_a_document_stays_on_its_side_of_the_validation_carve(long_files, tmp_path):
    from hydra.utils import instantiate
    from transformers import AutoTokenizer

    from finetune.tasks.data import DOCUMENT

    save_tokenizer(tmp_path)
    cfg = compose_config(
        "task=ag_news",
        f"task.data_files.train={long_files['train']}",
        "task.validation_size=0.25",
        "task.max_length=24",
        "task.long_text.strategy=chunks",
        "task.long_text.max_train_windows=2",
    )
    task = instantiate(cfg.task, _convert_="object")
    splits = task.load(seed=3)
    encoded = task.tokenize(splits, AutoTokenizer.from_pretrained(tmp_path), None)
    for split in ("train", "validation"):
        windows = np.asarray(encoded[split][DOCUMENT])
        assert sorted(set(windows)) == list(range(len(splits[split])))  # every document of the split, and only those
        assert len(windows) > len(splits[split])
        assert np.array_equal(np.asarray(encoded[split]["label"]), np.asarray(splits[split]["label"])[windows])
    assert np.bincount(encoded["train"][DOCUMENT]).max() == 2  # the cap
    assert not set(splits["train"]["text"]) & set(splits["validation"]["text"])


# --- the whole way through: a run, the predict CLI, the ONNX backend --------------------------
LONG_RUN = [
    *TINY_TRAINING,
    "trainer.num_train_epochs=1",
    "task.max_length=24",
    "hardware=cpu",
    "task.examples=[]",
    "task=ag_news",
    "task.validation_size=0.25",
]


@pytest.fixture(scope="module")
def chunks_run(tmp_path_factory, long_files, tiny_models) -> Path:
    run_dir = tmp_path_factory.mktemp("long_runs") / "chunks"
    result = run_py(
        *LONG_RUN,
        f"model.name_or_path={tiny_models['bert']}",
        f"task.data_files.train={long_files['train']}",
        f"task.data_files.test={long_files['test']}",
        "task.long_text.strategy=chunks",
        "task.long_text.stride=4",
        f"hydra.run.dir={run_dir}",
        timeout=900,
    )
    assert result.returncode == 0, result.output[-4000:]
    assert "longer than task.max_length=24" in result.output
    return run_dir


@pytest.mark.trains
def test_a_chunks_run_scores_documents_and_says_what_the_windows_cost(chunks_run):
    metrics = read_json(chunks_run / "metrics.json")
    test, train = metrics["test"], metrics["train"]
    assert test["rows"] == test["documents"] == 24 and test["windows_per_document"] > 1.5 and test["tokens"] > 24 * 24
    assert train["documents"] == 90 and train["windows"] > 90 and train["long_text"]["strategy"] == "chunks"
    assert (
        train["token_lengths"]["train"]["share_over_max_length"] > 0.5
        and train["token_lengths"]["test"]["rows_measured"] == 24
    )
    card = (chunks_run / "model" / "README.md").read_text(encoding="utf-8")
    assert (
        "## Long texts" in card
        and "task.long_text.strategy=chunks" in card
        and "a plain `pipeline` on this folder truncates" in card
    )


@pytest.mark.trains
def test_the_predict_cli_and_the_onnx_backend_score_documents_as_the_run_did(chunks_run, long_files, tmp_path):
    import pyarrow.parquet as pq

    saved = pq.read_table(chunks_run / "predictions_test.parquet").to_pandas()
    expected = saved[[f"p_{name}" for name in TOPICS]].to_numpy()
    assert cli("export", str(chunks_run)).returncode == 0
    outputs = {}
    for backend in ("torch", "onnx"):
        output = tmp_path / f"{backend}.csv"
        result = cli(
            "predict",
            str(chunks_run),
            "--input",
            str(long_files["test"]),
            "--output",
            str(output),
            "--all-scores",
            f"--backend={backend}",
            *(["--precision", "fp32"] if backend == "torch" else []),
        )
        assert result.returncode == 0, result.stderr
        assert "long texts: chunks (stride=4" in result.stderr
        outputs[backend] = _scores(output)
        assert np.abs(outputs[backend] - expected).max() < 1e-4, backend  # the same documents, in input order
        written = read_json(output.with_name(output.stem + ".metrics.json"))
        assert written["accuracy"] == pytest.approx(read_json(chunks_run / "metrics.json")["test"]["accuracy"])
        assert written["long_text"]["windows_per_document"] > 1.5
    truncated = tmp_path / "truncated.csv"
    assert (
        cli(
            "predict",
            str(chunks_run),
            "--input",
            str(long_files["test"]),
            "--output",
            str(truncated),
            "--all-scores",
            "--long-text",
            "truncate",
            "--precision",
            "fp32",
        ).returncode
        == 0
    )
    assert (
        np.abs(_scores(truncated) - expected).max() > 1e-4
    )  # the override reads the texts otherwise (the same reading agrees to 1e-7)


def _scores(path: Path) -> np.ndarray:
    import csv

    with path.open(encoding="utf-8") as f:
        return np.array([[float(row[f"p_{name}"]) for name in TOPICS] for row in csv.DictReader(f)])


@pytest.mark.trains
def test_short_texts_score_exactly_the_same_with_chunks_as_with_truncate(topic_files, tiny_models, tmp_path):
    runs = {}
    for strategy in ("truncate", "chunks"):
        runs[strategy] = tmp_path / strategy
        result = run_py(
            *TINY_TRAINING,
            "trainer.num_train_epochs=1",
            "hardware=cpu",
            "task.examples=[]",
            f"model.name_or_path={tiny_models['bert']}",
            f"task.data_files.train={topic_files['train']}",
            f"task.data_files.test={topic_files['test']}",
            "task.validation_size=0.2",
            f"task.long_text.strategy={strategy}",
            f"hydra.run.dir={runs[strategy]}",
            timeout=900,
        )
        assert result.returncode == 0, result.output[-3000:]
    truncate, chunks = (read_json(runs[s] / "metrics.json") for s in ("truncate", "chunks"))
    assert chunks["test"]["windows_per_document"] == 1.0
    for split in ("validation", "test"):
        assert {
            k: v
            for k, v in chunks[split].items()
            if k not in ("documents", "windows", "windows_per_document", "tokens")
        } == truncate[split]


@pytest.mark.skipif(not (SHARED_DATA / "imdb" / "train.csv").is_file(), reason="needs the shared IMDB files")
def test_the_imdb_preset_reads_the_shared_files_as_they_lie():
    from hydra.utils import instantiate

    task = instantiate(
        compose_config(
            "task=imdb",
            f"task.data_files.train={SHARED_DATA / 'imdb' / 'train.csv'}",
            f"task.data_files.test={SHARED_DATA / 'imdb' / 'test.csv'}",
            "task.max_train_samples=100",
        ).task,
        _convert_="object",
    )
    splits = task.load(seed=1)
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (100, 1000, 2000)
    assert sorted(set(splits["test"]["label"])) == [0, 1] and task.kind.label_names == ["negative", "positive"]
