"""The user's own file through the real run.py, no flags but the file and the model: what was detected, sized and
recorded; the few-label head (mean pooling folded in, class-mean start) end to end; the baseline check."""

import json
import random
import shutil

import pytest

from finetune.export import main as export_main
from tests.helpers import (
    TOPICS,
    read_json,
    run_py,
    start_and_wait_for_checkpoint,
    topic_rows,
    write_csv,
)

pytestmark = pytest.mark.trains

# What the run's training loss comes to on this machine's PyTorch (CPU, fp32): a change to the few-label
# method, the sized defaults or the detection shows here first.
REFERENCE_LOSS = 0.2376


def reviews(n: int, seed: int):
    """Rows as people's files have them: ``review`` and ``category`` columns."""
    return [{"review": r["text"], "category": r["label"]} for r in topic_rows(n, seed)]


@pytest.fixture(scope="module")
def sentence_model(tmp_path_factory, tiny_models):
    """The tiny BERT as a sentence-transformers folder that means its tokens (as all-MiniLM-L6-v2 is)."""
    folder = tmp_path_factory.mktemp("sentence") / "tiny"
    shutil.copytree(tiny_models["bert"], folder)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return folder


@pytest.fixture(scope="module")
def own_run(tmp_path_factory, sentence_model):
    """``python run.py task=file file=tickets.csv test_file=held_out.csv model=minilm`` on 60 rows, the model
    folder the tiny one. The other flags are the tiny model's: a random body learns at a larger rate, and its
    position table is short."""
    cwd = tmp_path_factory.mktemp("own")
    write_csv(cwd / "tickets.csv", reviews(60, seed=31))
    write_csv(cwd / "held_out.csv", reviews(40, seed=32))
    result = run_py(
        "task=file",
        "file=tickets.csv",
        "test_file=held_out.csv",
        "model=minilm",
        f"model.name_or_path={sentence_model}",
        "task.max_length=32",
        "trainer.learning_rate=2e-3",
        cwd=cwd,
        timeout=900,
    )
    assert result.returncode == 0, result.output[-4000:]
    (run_dir,) = (cwd / "outputs").iterdir()
    return run_dir, result.output


def test_what_was_detected_is_printed_recorded_and_named_after_the_file(own_run):
    run_dir, printed = own_run
    assert run_dir.name.endswith("_minilm_tickets")
    detected = read_json(run_dir / "detected.json")
    assert detected["text_fields"] == ["review"] and detected["label_field"] == "category"
    assert detected["label_names"] == sorted(TOPICS) and detected["kind"] == "single_label"
    record = read_json(run_dir / "model" / "finetune.json")
    assert (record["text_fields"], record["label_field"], record["labels"]) == (["review"], "category", sorted(TOPICS))
    config = read_json(run_dir / "model" / "config.json")
    assert [config["id2label"][str(i)] for i in range(4)] == sorted(TOPICS)
    assert "Detected from tickets.csv" in printed and "task.label_field     category  (by its name)" in printed
    assert "Validation: none held out (60 train rows, fewer than 1000, all train; the labeled test file" in printed
    assert (
        "Sized to the data (60 training rows, fewer than 1000: few labels, at least 100 steps): "
        "trainer.num_train_epochs=13, trainer.per_device_train_batch_size=8, trainer.eval_strategy=no, "
        "trainer.save_strategy=no, trainer.load_best_model_at_end=False; yours kept: trainer.learning_rate"
    ) in printed
    examples = printed.split("Examples (the first rows of the test split):")[1]
    assert reviews(40, seed=32)[0]["review"] in examples  # the user's own rows, no preset's
    card = (run_dir / "model" / "README.md").read_text()
    assert "# " + run_dir.name in card and "## Data" in card and "| task.label_field | category | by its name |" in card
    assert "Trained on 60 rows; validated on no rows held out" in card and "scored on test (40 rows)" in card
    assert "World" not in printed.split("Examples")[0].split("Detected")[0]  # nothing of AG News before the data


def test_the_few_label_head_trains_learns_and_is_a_standard_model(own_run, monkeypatch):
    run_dir, printed = own_run
    metrics = read_json(run_dir / "metrics.json")
    assert "Head: the few-label head: mean pooling folded in as one more layer, the head started" in printed
    assert read_json(run_dir / "model" / "config.json")["num_hidden_layers"] == 3  # 2 + the folded pooling
    assert metrics["train"]["steps"] == 104 and metrics["validation"] is None and metrics["train"]["batch_size"] == 8
    assert metrics["train"]["loss"] == pytest.approx(REFERENCE_LOSS, abs=1e-3)
    verdict = metrics["train"]["baseline_check"]
    assert verdict["learned"] and verdict["split"] == "test" and verdict["baseline"] == pytest.approx(0.25)
    assert metrics["test"]["accuracy"] >= 0.9 and metrics["test"]["baseline"]["accuracy"] == pytest.approx(0.25)
    assert not (run_dir / "model" / "calibration.json").exists()  # nothing is fitted on the test file
    assert not (run_dir / "checkpoints").exists() or not list((run_dir / "checkpoints").iterdir())

    from transformers import pipeline

    from finetune.inference.predictor import Predictor

    texts = [r["review"] for r in reviews(12, seed=33)]
    piped = [answer["label"] for answer in pipeline("text-classification", model=str(run_dir / "model"))(texts)]
    predicted = Predictor.load(run_dir / "model")(texts)
    assert [answer[0]["label"] for answer in predicted] == piped

    monkeypatch.chdir(run_dir.parent.parent)  # where the run was started: its file names are relative to it
    assert export_main([str(run_dir)]) == 0
    parity = read_json(run_dir / "export" / "export.json")["parity"]
    assert parity["agreement"] == 1.0 and parity["max_abs_logit_difference"] < 1e-4


def test_a_run_that_cannot_have_learned_says_so(tmp_path, tiny_models):
    rows = reviews(80, seed=34)
    labels = [r["category"] for r in rows]
    random.Random(0).shuffle(labels)  # labels the texts do not tell
    write_csv(tmp_path / "shuffled.csv", [{**r, "category": label} for r, label in zip(rows, labels)])
    result = run_py(
        "task=file",
        "file=shuffled.csv",
        f"model.name_or_path={tiny_models['bert']}",
        "task.max_length=32",
        "trainer.max_steps=1",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.output[-4000:]
    warning = [line for line in result.output.splitlines() if "The model did not learn" in line]
    assert (
        len(warning) == 2
        and "validation accuracy" in warning[-1]
        and "Likely causes: too few optimizer steps (1" in warning[-1]
    )
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["train"]["baseline_check"]["learned"] is False
    assert "The model did not learn" in (tmp_path / "run" / "model" / "README.md").read_text()


def test_a_resumed_run_reads_the_file_as_it_did_and_refuses_a_file_that_changed(tmp_path, sentence_model):
    write_csv(tmp_path / "tickets.csv", reviews(60, seed=31))
    run_dir = tmp_path / "run"
    args = [
        "task=file",
        "file=tickets.csv",
        "model=minilm",
        f"model.name_or_path={sentence_model}",
        "task.max_length=32",
        "trainer.save_strategy=steps",
        "trainer.save_steps=10",
        "model.contrastive_pairs=40",
        f"hydra.run.dir={run_dir}",
    ]
    process = start_and_wait_for_checkpoint(args, tmp_path, run_dir, step=10)
    process.kill()
    first = process.communicate()[0]
    assert "Contrastive stage: 40 pairs of training rows (20 of one class), 3 steps" in first
    original = (tmp_path / "tickets.csv").read_text()
    (tmp_path / "tickets.csv").write_text(original + "a brand new kind of ticket,Billing\n")
    changed = run_py(*args, "resume=true", cwd=tmp_path)
    assert (
        changed.returncode == 1
        and "The train file now gives other settings than when this run started" in changed.output
    )
    assert "task.label_names" in changed.output and "Billing" in changed.output
    (tmp_path / "tickets.csv").write_text(original)
    resumed = run_py(*args, "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.output[-4000:]
    assert "Resuming from" in resumed.output
    assert "Contrastive stage:" not in resumed.output  # the checkpoint holds the body it trained
    card = (run_dir / "model" / "README.md").read_text()
    assert (
        "the body trained first on 40 pairs of training rows (SetFit's contrastive objective) (in the checkpoint"
        in card
    )
    assert read_json(run_dir / "model" / "finetune.json")["labels"] == sorted(TOPICS)
