"""Bad input through the real run.py: a non-zero exit, one message naming the problem and the fix, nothing saved."""

from pathlib import Path
from typing import Callable, Dict, List

import pytest

from tests.helpers import TINY_TRAINING, run_py, topic_rows, write_csv


def rows_file(name: str, text: str, encoding: str = "utf-8") -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
        return path

    return make


def weightless_model(folder: Path, models: Dict[str, Path]) -> Path:
    empty = folder / "model-without-weights"
    empty.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (empty / name).write_bytes((models["bert"] / name).read_bytes())
    return empty


# id -> (overrides, with {train}, {model} and {tmp} filled in; a train file maker or None; expected message parts)
CASES = {
    "unknown task preset": (["task=ag_nws"], None, ["Could not find 'task/ag_nws'", "ag_news"]),
    "unknown model preset": (["model=bertt"], None, ["Could not find 'model/bertt'", "roberta"]),
    "misspelt config key": (
        ["task.max_lenght=64"],
        None,
        ["Unknown config key 'task.max_lenght'", "Did you mean 'max_length'?"],
    ),
    "wrong type": (["task.max_length=abc"], None, ["task.max_length", "'abc'", "could not be converted to Integer"]),
    "unknown trainer field": (
        ["trainer.learning_rat=1e-3"],
        None,
        ["'trainer.learning_rat': not a transformers.TrainingArguments field", "Did you mean 'learning_rate'?"],
    ),
    "missing data file": (
        ["task.data_files.train={tmp}/nowhere.csv"],
        None,
        ["task.data_files.train: no such file: ", "nowhere.csv"],
    ),
    "missing text column": (
        [],
        rows_file("train.csv", "body,label\nsome news,World\n"),
        ["no column 'text'", "['body', 'label']", "set task.text_fields"],
    ),
    "label outside label_names": (
        [],
        rows_file("train.csv", "text,label\nfine text,World\nmore text,Wrld\n"),
        ["row 2 has label 'Wrld'", "Fix that row, or task.label_names"],
    ),
    "empty data set": ([], rows_file("train.csv", "text,label\n"), ["task.data_files.train: ", "has no rows"]),
    "not UTF-8": (
        [],
        rows_file("train.csv", "text,label\ncaf\u00e9 news,World\n", encoding="latin-1"),
        ["is not valid UTF-8", "save it as UTF-8"],
    ),
    "not CSV": (
        [],
        rows_file("train.csv", "text,label\nfine,World\nmore,Sports,extra,fields\n"),
        ["is not valid CSV", "Expected 2 fields in line 3, saw 4", "Fix that line"],
    ),
    "empty text field": (
        [],
        rows_file("train.csv", "text,label\nfine text,World\n,Sports\n"),
        ["row 2 has no text in column 'text'", "fill or remove that row"],
    ),
    "max_length beyond the model": (
        ["task.max_length=512"],
        None,
        ["task.max_length=512 is more than", "(64 tokens, says tokenizer_config.json); set task.max_length=64 or less"],
    ),
    "model folder without weights": (
        ["model.name_or_path={tmp}/model-without-weights"],
        None,
        ["has no weights", "point model.name_or_path at a complete model folder"],
    ),
    "output folder not writable": (
        ["hydra.run.dir={tmp}/train.csv/run"],
        None,
        ["Cannot create the run folder", "is not a folder", "Choose another with hydra.run.dir="],
    ),
    "access token on the command line": (
        ["trainer.hub_token=hf_secret"],
        None,
        ["trainer.hub_token: an access token on the command line", "HF_TOKEN"],
    ),
}


def case_args(overrides: List[str], make_train, tmp_path: Path, tiny_models) -> List[str]:
    train = make_train(tmp_path) if make_train else write_csv(tmp_path / "train.csv", topic_rows(40, seed=1))
    weightless_model(tmp_path, tiny_models)
    defaults = [
        f"model.name_or_path={tiny_models['bert']}",
        f"task.data_files.train={train}",
        "task.validation_size=0.25",
        f"hydra.run.dir={tmp_path}/run",
        *TINY_TRAINING,
    ]
    return defaults + [o.format(tmp=tmp_path) for o in overrides]


@pytest.mark.trains
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_stops_with_one_message_and_saves_nothing(case, tmp_path, tiny_models):
    overrides, make_train, expected = CASES[case]
    result = run_py(*case_args(overrides, make_train, tmp_path, tiny_models), cwd=tmp_path)
    assert result.returncode != 0, result.output[-3000:]
    for part in expected:
        assert part in result.output, result.output[-3000:]
    assert "Traceback" not in result.output
    assert not list(tmp_path.rglob("model.safetensors")) and not list(tmp_path.rglob("metrics.json"))
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before training


@pytest.mark.trains
def test_hydra_full_error_shows_the_traceback(tmp_path, tiny_models):
    overrides, make_train, _ = CASES["label outside label_names"]
    result = run_py(
        *case_args(overrides, make_train, tmp_path, tiny_models), cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"}
    )
    assert result.returncode != 0 and "Traceback" in result.output and "FinetuneError: " in result.output
