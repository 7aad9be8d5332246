"""The task module on local files: formats, label handling, splits, and the errors bad data gets."""

from pathlib import Path

import numpy as np
import pytest

from finetune.errors import FinetuneError
from finetune.tasks.data import TextClassificationData, label_array
from tests.helpers import TOPICS, topic_rows, write_csv

NAMES = list(TOPICS)


def topic_task(train: Path, **fields) -> TextClassificationData:
    files = {"train": str(train), "test": fields.pop("test", None), "validation": fields.pop("validation", None)}
    return TextClassificationData(
        data_files=files, text_fields=["text"], label_names=NAMES, validation_size=0.2, **fields
    )


def load_error(task: TextClassificationData) -> str:
    with pytest.raises(FinetuneError) as error:
        task.load(seed=0)
    return str(error.value)


def test_label_names_and_ids_load_alike_and_validation_is_carved_stratified(topic_files):
    splits = topic_task(topic_files["train"], test=str(topic_files["test"])).load(seed=0)
    assert sorted(splits) == ["test", "train", "validation"]
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (160, 40, 40)
    assert splits["train"].features["label"].names == NAMES
    assert sorted(label_array(splits["validation"]).tolist()) == sorted([0, 1, 2, 3] * 10)  # 10 of each class
    rows = topic_rows(200, seed=1)
    first = splits["train"][0]
    assert NAMES[first["label"]] == next(r["label"] for r in rows if r["text"] == first["text"])


def test_the_carved_split_depends_on_the_seed_only(topic_files):
    task = topic_task(topic_files["train"])
    first, again, other = task.load(seed=0), task.load(seed=0), task.load(seed=1)
    assert first["validation"]["text"][:] == again["validation"]["text"][:]
    assert first["validation"]["text"][:] != other["validation"]["text"][:]


def test_validation_size_in_rows_and_max_samples(topic_files):
    task = topic_task(
        topic_files["train"],
        test=str(topic_files["test"]),
        max_train_samples=50,
        max_eval_samples=7,
        max_test_samples=5,
    )
    task.validation_size = 20
    splits = task.load(seed=0)
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (50, 7, 5)


def test_glue_tsv_is_read_without_quoting_and_an_unlabeled_test_is_detected(pair_files):
    task = TextClassificationData(
        data_files={"train": str(pair_files["train"]), "test": str(pair_files["test"])},
        text_fields=["sentence1", "sentence2"],
        label_names=["entailment", "not_entailment"],
    )
    splits = task.load(seed=0)
    assert len(splits["train"]) + len(splits["validation"]) == 160 and len(splits["test"]) == 30
    assert splits["test"][0]["sentence1"].startswith('"')  # a bare quote is text, not a quoted field
    assert task.is_labeled(splits["train"]) and not task.is_labeled(splits["test"])
    assert "label" not in splits["test"].column_names
    assert "test" in task.summary(splits) and "unlabeled" in task.summary(splits)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_json_and_parquet_files(tmp_path, suffix):
    import pandas as pd

    frame = pd.DataFrame(topic_rows(40, seed=5))
    path = tmp_path / f"train{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    splits = topic_task(path).load(seed=0)
    assert len(splits["train"]) + len(splits["validation"]) == 40


def test_summary_counts_labels_per_split(topic_files):
    task = topic_task(topic_files["train"], test=str(topic_files["test"]))
    summary = task.summary(task.load(seed=0))
    assert "train" in summary and "160 rows" in summary and "World: 40" in summary
    assert "test" in summary and "Sci/Tech: 10" in summary and "columns: text, label" in summary


def test_pairs_are_tokenized_as_pairs_unpadded_and_truncated(pair_files, tiny_models):
    from transformers import AutoTokenizer

    task = TextClassificationData(
        data_files={"train": str(pair_files["train"])},
        text_fields=["sentence1", "sentence2"],
        label_names=["entailment", "not_entailment"],
        max_length=20,
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    encoded = task.tokenize(task.load(seed=0), tokenizer, num_proc=None)["train"]
    assert sorted(encoded.column_names) == ["attention_mask", "input_ids", "label", "token_type_ids"]
    row = encoded[0]
    assert row["input_ids"].count(tokenizer.sep_token_id) == 2 and 1 in row["token_type_ids"]  # [CLS] a [SEP] b [SEP]
    # 5 or 6 tokens, then 4, plus 3 special ones: each row keeps its own length (the collator pads per batch)
    assert {len(ids) for ids in encoded["input_ids"]} == {12, 13}
    task.max_length = 10
    assert {len(ids) for ids in task.tokenize(task.load(seed=0), tokenizer, num_proc=None)["train"]["input_ids"]} == {
        10
    }


def test_max_length_beyond_the_model_is_refused(tiny_models, topic_files):
    from transformers import AutoTokenizer

    task = topic_task(topic_files["train"], max_length=512)
    with pytest.raises(
        FinetuneError, match=r"task.max_length=512 is more than tiny accepts \(64 tokens, says its tokenizer\)"
    ):
        task.check_max_length(AutoTokenizer.from_pretrained(tiny_models["bert"]).model_max_length, "tiny")


def test_predictions_file_is_glue_format(tmp_path):
    task = TextClassificationData(label_names=["entailment", "not_entailment"])
    task.write_predictions(tmp_path / "RTE.tsv", [1, 0, 1])
    assert (
        tmp_path / "RTE.tsv"
    ).read_text() == "index\tprediction\n0\tnot_entailment\n1\tentailment\n2\tnot_entailment\n"


def write_rows(tmp_path: Path, rows, name: str = "train.csv") -> Path:
    return write_csv(tmp_path / name, rows)


def test_unknown_label_names_the_row_and_value(tmp_path):
    rows = topic_rows(20, seed=6)
    rows[13]["label"] = "Sprots"
    message = load_error(topic_task(write_rows(tmp_path, rows)))
    assert "row 14 has label 'Sprots'" in message and "task.label_names" in message


def test_label_id_out_of_range_names_the_row(tmp_path):
    rows = [{"text": r["text"], "label": NAMES.index(r["label"])} for r in topic_rows(20, seed=6)]
    rows[4]["label"] = 7
    assert "row 5 has label 7" in load_error(topic_task(write_rows(tmp_path, rows)))


def test_missing_text_column_lists_the_columns(tmp_path):
    rows = [{"body": r["text"], "label": r["label"]} for r in topic_rows(20, seed=6)]
    message = load_error(topic_task(write_rows(tmp_path, rows)))
    assert "no column 'text'" in message and "['body', 'label']" in message and "task.text_fields" in message


def test_missing_label_column_in_train(tmp_path):
    rows = [{"text": r["text"]} for r in topic_rows(20, seed=6)]
    assert "no label column 'label'" in load_error(topic_task(write_rows(tmp_path, rows)))


def test_empty_text_names_the_row(tmp_path):
    rows = topic_rows(20, seed=6)
    rows[2]["text"] = "  "
    assert "row 3 has no text in column 'text'" in load_error(topic_task(write_rows(tmp_path, rows)))


def test_missing_file_and_unknown_format(tmp_path):
    assert "task.data_files.train: no such file" in load_error(topic_task(tmp_path / "nope.csv"))
    (tmp_path / "train.xls").write_bytes(b"PK")
    assert "cannot read '.xls' files" in load_error(topic_task(tmp_path / "train.xls"))


def test_empty_file_and_undecodable_file(tmp_path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    assert "has no rows" in load_error(topic_task(tmp_path / "empty.csv"))
    (tmp_path / "latin1.csv").write_bytes('text,label\n"caf\xe9 au lait",World\n'.encode("latin-1"))
    assert "is not valid UTF-8 (byte b'\\xe9'" in load_error(topic_task(tmp_path / "latin1.csv"))


def test_validation_size_that_leaves_no_training_rows(tmp_path):
    task = topic_task(write_rows(tmp_path, topic_rows(20, seed=6)))
    task.validation_size = 20
    assert "leaves no training rows" in load_error(task)


def test_k_folds_validate_on_disjoint_parts_that_cover_train_and_leave_test_alone(topic_files):
    folds = [
        topic_task(topic_files["train"], test=str(topic_files["test"]), folds=4, fold=i).load(seed=7) for i in range(4)
    ]
    train_rows = [(r["text"], NAMES.index(r["label"])) for r in topic_rows(200, seed=1)]
    validated = [list(zip(f["validation"]["text"], f["validation"]["label"])) for f in folds]
    assert sorted(row for rows in validated for row in rows) == sorted(
        train_rows
    )  # every train row once: disjoint and covering
    for split, rows in zip(folds, validated):
        assert sorted(rows + list(zip(split["train"]["text"], split["train"]["label"]))) == sorted(
            train_rows
        )  # trains on the rest
        per_class = np.bincount(label_array(split["validation"]), minlength=4)
        assert (
            per_class.sum() == 50 and per_class.max() - per_class.min() <= 1
        )  # stratified: 50 of each class, over 4 folds
        assert (
            split["test"]["text"][:] == folds[0]["test"]["text"][:] and len(split["test"]) == 40
        )  # the test split never changes
    again = topic_task(topic_files["train"], folds=4, fold=2).load(seed=7)
    other = topic_task(topic_files["train"], folds=4, fold=2).load(seed=8)
    assert (
        again["validation"]["text"][:] == folds[2]["validation"]["text"][:] != other["validation"]["text"][:]
    )  # seeded


def test_k_folds_split_only_the_max_train_samples_rows(topic_files):
    folds = [topic_task(topic_files["train"], folds=5, fold=i, max_train_samples=50).load(seed=0) for i in range(5)]
    assert [len(f["validation"]) for f in folds] == [10] * 5 and all(len(f["train"]) == 40 for f in folds)
    first_50 = sorted(r["text"] for r in topic_rows(200, seed=1)[:50])
    assert sorted(t for f in folds for t in f["validation"]["text"]) == first_50
    assert "task.folds=30 needs at least 60 train rows" in load_error(
        topic_task(topic_files["train"], folds=30, max_train_samples=50)
    )
