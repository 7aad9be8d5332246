"""Inference from a trained run: the Python API and the command line, on tiny models."""

import json
from pathlib import Path

import numpy as np
import pytest

from finetune import FinetuneError, Predictor
from finetune.serving.predict import main
from tests.helpers import TOPICS, cli, pair_rows, topic_rows, write_csv


def test_api_single_list_and_order(topic_run):
    predictor = Predictor.load(topic_run, precision="fp32")
    single = predictor("coach league goal the season match")
    assert [s["label"] for s in single][0] == "Sports" and sorted(s["label"] for s in single) == sorted(TOPICS)
    assert abs(sum(s["score"] for s in single) - 1) < 1e-5 and single == sorted(single, key=lambda s: -s["score"])
    rows = topic_rows(40, seed=9)
    texts = [r["text"] + " the" * (i % 5) for i, r in enumerate(rows)]  # varied lengths: batches get re-sorted
    batched = Predictor.load(topic_run, precision="fp32", batch_size=3)(texts, top_k=1)
    one_by_one = [predictor(t, top_k=1) for t in texts]
    assert [b[0]["label"] for b in batched] == [o[0]["label"] for o in one_by_one]  # input order kept
    assert all(abs(b[0]["score"] - o[0]["score"]) < 1e-4 for b, o in zip(batched, one_by_one))
    assert sum(b[0]["label"] == r["label"] for b, r in zip(batched, rows)) >= 30


@pytest.mark.parametrize(
    "lengths, max_rows, max_tokens, multiple, expected",
    [
        ([5, 3, 9, 4], 64, None, None, [[1, 3, 0, 2]]),  # shortest first, all in one pass
        ([5, 3, 9, 4], 2, None, None, [[1, 3], [0, 2]]),  # max_rows
        ([5, 3, 9, 4], 64, 12, None, [[1, 3], [0], [2]]),  # 2 x 4 <= 12, 3 x 5 > 12; then 2 x 9 > 12
        (
            [5, 3, 9, 4],
            64,
            16,
            8,
            [[1, 3], [0], [2]],
        ),  # lengths rounded up to 8: 2 x 8 = 16 fits, 3 x 8 does not; 9 -> 16 alone
        ([40, 2], 64, 16, None, [[1], [0]]),  # a row longer than the budget still goes, alone
        ([], 64, 16, None, []),
    ],
)
def test_length_batches_hold_neighbours_by_length_within_rows_and_padded_tokens(
    lengths, max_rows, max_tokens, multiple, expected
):
    from finetune.inference.predictor import length_batches

    assert [list(batch) for batch in length_batches(lengths, max_rows, max_tokens, multiple)] == expected


def test_passes_score_every_text_once_as_one_call_does(topic_run):
    texts = [r["text"] + " the" * (i % 7) for i, r in enumerate(topic_rows(30, seed=4))]
    predictor = Predictor.load(topic_run, precision="fp32", max_batch_tokens=64)  # several passes
    passes = list(predictor.passes(texts))
    rows = np.concatenate([rows for rows, _ in passes])
    assert len(passes) > 3 and sorted(rows) == list(range(len(texts)))
    lengths = [len(predictor.tokenizer(texts[i])["input_ids"]) for i in rows]
    assert lengths == sorted(lengths)  # shortest first: a server answers short requests while long ones run
    scores = np.empty((len(texts), 4))
    for positions, part in passes:
        scores[positions] = part
    np.testing.assert_allclose(scores, Predictor.load(topic_run, precision="fp32").scores(texts), atol=1e-5)


def test_saved_model_and_predictor_agree_with_plain_pipeline(topic_run):
    from transformers import pipeline

    text = "shares profit market the a"
    plain = pipeline("text-classification", model=str(topic_run / "model"), top_k=None)([text])[0]
    ours = Predictor.load(topic_run / "model", precision="fp32")(text)
    assert [s["label"] for s in plain] == [s["label"] for s in ours]
    assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(plain, ours))


def test_api_pairs(pair_run):
    predictor = Predictor.load(pair_run, precision="fp32")
    result = predictor([("dog cat car", "tree yes"), ("man woman", "city no")])
    assert len(result) == 2 and all({s["label"] for s in r} == {"entailment", "not_entailment"} for r in result)
    assert len(predictor(("dog cat car", "tree yes"), top_k=1)) == 1


def test_cli_text_and_pair_print_the_answer_as_json(topic_run, pair_run):
    result = cli("predict", str(topic_run), "coach league goal the season match", "--top-k", "2")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)  # stdout is the answer alone; where the model runs goes to stderr
    assert [item["label"] for item in answer][0] == "Sports" and len(answer) == 2 and "Model:" in result.stderr
    assert answer[0]["score"] >= answer[1]["score"] and answer[0]["score"] == round(answer[0]["score"], 3)
    result = cli("predict", str(pair_run), "dog cat car house tree", "--text-pair", "river city man yes")
    assert result.returncode == 0 and {item["label"] for item in json.loads(result.stdout)} == {
        "entailment",
        "not_entailment",
    }
    abstained = cli("predict", str(topic_run), "the a on", "--min-confidence", "1")
    answer = json.loads(abstained.stdout)
    assert (answer["predicted"], answer["abstained"]) == ("(abstained)", True) and answer["best_guess"][0]["label"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_file_in_file_out_with_metrics(topic_run, tmp_path, suffix):
    import pandas as pd

    rows = topic_rows(30, seed=11)
    source, output = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    frame = pd.DataFrame(rows)
    {
        ".csv": lambda: frame.to_csv(source, index=False),
        ".jsonl": lambda: frame.to_json(source, orient="records", lines=True),
        ".parquet": lambda: frame.to_parquet(source),
    }[suffix]()
    assert (
        main([str(topic_run), "--input", str(source), "--output", str(output), "--all-scores", "--precision", "fp32"])
        == 0
    )
    written = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True), ".parquet": pd.read_parquet}[
        suffix
    ](output)
    assert written["text"].tolist() == frame["text"].tolist()  # rows kept, in order
    assert list(written.columns) == ["text", "label", "predicted", "confidence", *(f"p_{name}" for name in TOPICS)]
    assert set(written["predicted"]) <= set(TOPICS) and written["confidence"].between(0, 1).all()
    assert np.allclose(written[[f"p_{name}" for name in TOPICS]].max(axis=1), written["confidence"])
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    accuracy = (written["predicted"] == written["label"]).mean()
    assert metrics["rows"] == 30 and metrics["accuracy"] == pytest.approx(accuracy) and metrics["accuracy"] >= 0.75
    assert set(metrics["per_class"]) == set(TOPICS) and metrics["per_class"]["World"]["support"] == 8
    matrix = metrics["confusion_matrix"]["rows_true_columns_predicted"]
    assert sum(map(sum, matrix)) == 30 and sum(matrix[i][i] for i in range(4)) == round(accuracy * 30)


def test_unlabeled_pair_file(pair_run, tmp_path):
    source = write_csv(tmp_path / "test.csv", pair_rows(10, seed=12, labeled=False))
    assert main([str(pair_run), "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 0
    assert not (tmp_path / "out.metrics.json").exists()
    assert (tmp_path / "out.csv").read_text().count("entailment") >= 10


@pytest.mark.parametrize(
    "setup, expected",
    [
        ("no_model", "holds no model"),
        ("missing_column", "has no column 'text'"),
        ("empty", "is empty"),
        ("binary", "not UTF-8"),
        ("bad_label", "label 'Weather'"),
    ],
)
def test_bad_input_is_one_message(setup, expected, topic_run, tmp_path, capsys):
    path, source = str(topic_run), tmp_path / "in.csv"
    if setup == "no_model":
        path = str(tmp_path)
        source.write_text("text\nhello\n")
    elif setup == "missing_column":
        source.write_text("body,label\nhello,World\n")
    elif setup == "empty":
        source.write_text("")
    elif setup == "binary":
        source.write_bytes(b"\xff\xfe\x00text\x00\x81\x82")
    else:
        source.write_text("text,label\nhello,Weather\n")
    assert main([path, "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 1
    error = capsys.readouterr().err
    assert expected in error and "Traceback" not in error and error.count("\n") == 1


def test_predictor_rejects_mixed_inputs(topic_run):
    with pytest.raises(FinetuneError, match="Mix of single texts and pairs"):
        Predictor.load(topic_run)(["a text", ("a", "pair")])


def write_frame(frame, path: Path) -> None:
    import csv as csv_module

    {
        ".csv": lambda: frame.to_csv(path, index=False),
        ".tsv": lambda: frame.to_csv(path, sep="\t", index=False, quoting=csv_module.QUOTE_NONE),
        ".json": lambda: frame.to_json(path, orient="records"),
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
        ".parquet": lambda: frame.to_parquet(path),
    }[path.suffix]()


def read_frame(path: Path):
    import pandas as pd

    return {
        ".csv": lambda: pd.read_csv(path),
        ".tsv": lambda: pd.read_csv(path, sep="\t"),
        ".json": lambda: pd.read_json(path),
        ".jsonl": lambda: pd.read_json(path, lines=True),
        ".parquet": lambda: pd.read_parquet(path),
    }[path.suffix]()


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_a_file_streamed_in_chunks_gives_the_rows_in_order_and_metrics_over_all_rows(
    topic_run, tmp_path, suffix, capsys
):
    import pandas as pd

    rows = [
        {**r, "text": r["text"] + " the" * (i % 6)} for i, r in enumerate(topic_rows(50, seed=13))
    ]  # lengths vary: sorted within chunks
    source, whole, chunked = tmp_path / f"in{suffix}", tmp_path / f"whole{suffix}", tmp_path / f"chunked{suffix}"
    write_frame(pd.DataFrame(rows), source)
    assert (
        main([str(topic_run), "--input", str(source), "--output", str(whole), "--all-scores", "--precision", "fp32"])
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                str(topic_run),
                "--input",
                str(source),
                "--output",
                str(chunked),
                "--all-scores",
                "--precision",
                "fp32",
                "--chunk-rows",
                "7",
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert "50/50" in printed.err and "rows/s" in printed.err  # the progress bar counts rows
    assert f"Wrote 50 rows to {chunked}" in printed.err
    summary = json.loads(printed.out)  # stdout: what was written, as JSON
    assert (summary["output"], summary["rows"], summary["abstained"]) == (str(chunked), 50, None)
    assert summary["metrics_file"] == str(tmp_path / "chunked.metrics.json") and summary["metrics"]["rows"] == 50
    one, seven = read_frame(whole), read_frame(chunked)  # 1 chunk against 8 chunks (7 rows, the last 1)
    assert list(seven.columns) == list(one.columns) and seven["text"].tolist() == [r["text"] for r in rows]
    assert seven["predicted"].tolist() == one["predicted"].tolist()
    scores = ["confidence", *(c for c in one.columns if c.startswith("p_"))]
    assert np.allclose(seven[scores].to_numpy(float), one[scores].to_numpy(float), atol=1e-5)
    metrics_one = json.loads((tmp_path / "whole.metrics.json").read_text())
    metrics_seven = json.loads((tmp_path / "chunked.metrics.json").read_text())
    assert metrics_seven["rows"] == 50 and metrics_seven["accuracy"] == metrics_one["accuracy"]
    assert metrics_seven["confusion_matrix"] == metrics_one["confusion_matrix"]


def test_an_output_that_would_destroy_a_file_is_refused_before_any_work(topic_run, tmp_path, capsys):
    source = write_csv(tmp_path / "in.csv", topic_rows(10, seed=14))
    before = source.read_bytes()
    no_run = str(tmp_path / "no-such-run")  # the output is checked first: not even the run folder is read
    assert main([no_run, "--input", str(source), "--output", str(source), "--overwrite"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: --output {source} is the --input file; write the predictions into another file."
    )
    assert source.read_bytes() == before
    existing = tmp_path / "out.csv"
    existing.write_text("an earlier result\n")
    assert main([no_run, "--input", str(source), "--output", str(existing)]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: --output {existing} exists; add --overwrite to replace it, or choose another file."
    )
    assert main([no_run, "--input", str(source), "--output", str(tmp_path / "out.xlsx")]) == 1
    assert "cannot write '.xlsx' files" in capsys.readouterr().err
    assert existing.read_text() == "an earlier result\n"
    assert main([str(topic_run), "--input", str(source), "--output", str(existing), "--overwrite"]) == 0
    assert existing.read_text().startswith("text,label,predicted,confidence\n")


def test_a_bad_label_far_into_the_file_stops_it_before_any_row_is_predicted(topic_run, tmp_path, capsys):
    rows = topic_rows(30, seed=15)
    rows[25]["label"] = "Weather"
    source, output = write_csv(tmp_path / "in.csv", rows), tmp_path / "out.csv"
    assert main([str(topic_run), "--input", str(source), "--output", str(output), "--chunk-rows", "7"]) == 1
    error = capsys.readouterr().err
    assert error.strip().startswith("error: --input row 26: label 'Weather'") and "Predicting" not in error
    assert not output.exists() and not list(tmp_path.glob(".out*"))
