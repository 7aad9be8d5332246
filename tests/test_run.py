"""The real entry point end to end on tiny models: what a run writes, prints and refuses."""

import os
import subprocess
import sys

import pytest

from finetune.config.resolvers import register_resolvers
from finetune.config.schemas import register_configs
from finetune.errors import FinetuneError
from finetune.training.train import run
from tests.helpers import (
    FAKE_TOKEN,
    REPO,
    TINY_TRAINING,
    TOPICS,
    compose_config,
    pair_rows,
    printed,
    read_json,
    read_scalars,
    run_py,
)

register_configs()
register_resolvers()


def test_the_access_token_reaches_no_log_config_or_event_file(topic_run):
    run_dir = topic_run
    assert FAKE_TOKEN not in printed(run_dir).read_text()
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) > 10 and not [p for p in files if FAKE_TOKEN.encode() in p.read_bytes()]


def test_run_writes_the_best_model_metrics_and_logs(topic_run):
    run_dir, cwd = topic_run, topic_run.parents[1]
    assert sorted(p.name for p in cwd.iterdir()) == ["runs"]  # nothing written outside the run folder
    assert {"model", "logs", "checkpoints", "metrics.json", "run.log", ".hydra"} <= {p.name for p in run_dir.iterdir()}
    assert (run_dir / "model" / "model.safetensors").is_file() and (run_dir / "model" / "tokenizer.json").is_file()
    assert not list(run_dir.glob(".*.tmp"))

    metrics = read_json(run_dir / "metrics.json")
    assert set(metrics) == {"validation", "test", "train"}
    for split in ("validation", "test"):
        assert {"accuracy", "f1_macro", "loss", "rows"} <= set(metrics[split])
        assert metrics[split]["accuracy"] >= 0.6, metrics  # chance is 0.25
    assert metrics["train"]["samples"] == 160 and metrics["train"]["samples_per_second"] > 0
    assert metrics["train"]["steps"] == 80  # 4 epochs of 20 batches


def test_run_keeps_the_best_epoch(topic_run):
    run_dir = topic_run
    metrics = read_json(run_dir / "metrics.json")
    evals = read_scalars(run_dir / "logs")["eval/accuracy"]
    assert len(evals) == 4 and metrics["validation"]["accuracy"] == pytest.approx(max(evals))


def test_tensorboard_has_loss_learning_rate_and_eval_scores(topic_run):
    run_dir = topic_run
    scalars = read_scalars(run_dir / "logs")
    assert {"train/loss", "train/learning_rate", "eval/accuracy", "eval/f1_macro", "eval/loss", "test/accuracy"} <= set(
        scalars
    )
    losses = scalars["train/loss"]
    assert len(losses) == 40 and sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3  # the loss went down


def test_saved_model_works_with_a_plain_pipeline(topic_run):
    from transformers import pipeline

    run_dir = topic_run
    classify = pipeline("text-classification", model=str(run_dir / "model"), top_k=None)
    scores = classify(["coach league goal the season match"])[0]
    assert sorted(s["label"] for s in scores) == sorted(TOPICS)
    assert scores[0]["label"] == "Sports"


def test_run_prints_device_summary_final_scores_and_examples(topic_run):
    run_dir = topic_run
    output = printed(run_dir).read_text()
    assert "Using device: CPU (" in output
    assert "Dataset summary:" in output and "train" in output and "160 rows" in output and "World: 40" in output
    metrics = read_json(run_dir / "metrics.json")
    summary = output[output.index("Run summary") :]
    assert (
        f"  validation  {metrics['validation']['accuracy']:>9.4f}  {metrics['validation']['f1_macro']:>9.4f}" in summary
    )
    assert f"  test        {metrics['test']['accuracy']:>9.4f}" in summary and "validation, per class:" in summary
    assert f"run folder   {run_dir}" in summary and f"tensorboard --logdir {run_dir / 'logs'}" in summary
    assert "The Lakers beat the Celtics" in output and "[{'label': '" in output and "'score': 0." in output
    assert "Examples" in (run_dir / "run.log").read_text()


def test_pair_task_with_unlabeled_test_writes_predictions(pair_run):
    run_dir = pair_run
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["test"] is None and metrics["validation"]["accuracy"] >= 0.0
    lines = (run_dir / "RTE.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 31
    assert {line.split("\t")[1] for line in lines[1:]} <= {"entailment", "not_entailment"}
    assert [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(30)]
    from finetune.inference.predictor import Predictor  # the predictions belong to the rows in file order

    rows = pair_rows(30, seed=4, labeled=False)
    expected = Predictor.load(run_dir, precision="fp32")([(r["sentence1"], r["sentence2"]) for r in rows], top_k=1)
    assert [line.split("\t")[1] for line in lines[1:]] == [e[0]["label"] for e in expected]
    output = printed(run_dir).read_text()
    assert "Using device: CPU (" in output and "Precision: fp32" in output
    assert "A man is performing music." in output


@pytest.mark.trains
@pytest.mark.parametrize("architecture", ["bert", "distilbert", "roberta", "xlnet", "deberta"])
def test_every_architecture_fine_tunes_and_saves_label_names(architecture, tmp_path, topic_files, tiny_models):
    from transformers import AutoConfig

    cfg = compose_config(
        f"model={architecture}",
        f"model.name_or_path={tiny_models[architecture]}",
        f"task.data_files.train={topic_files['train']}",
        "task.validation_size=0.2",
        "task.examples=[]",
        "hardware=cpu",
        *TINY_TRAINING,
        "trainer.num_train_epochs=1",
    )
    metrics = run(cfg, tmp_path)
    assert metrics["test"] is None and 0.0 <= metrics["validation"]["accuracy"] <= 1.0
    saved = AutoConfig.from_pretrained(tmp_path / "model")
    assert saved.model_type == architecture
    assert saved.id2label == dict(enumerate(TOPICS)) and saved.label2id == {name: i for i, name in enumerate(TOPICS)}
    assert read_json(tmp_path / "metrics.json") == metrics


@pytest.mark.trains
def test_bad_data_stops_before_training_with_one_message(tmp_path, tiny_models):
    (tmp_path / "train.csv").write_text("text,label\nfine text,World\nmore text,Wrld\n")
    result = run_py(  # max_length within the tiny model's 64 tokens: that is refused before the data is read
        f"model.name_or_path={tiny_models['bert']}",
        f"task.data_files.train={tmp_path / 'train.csv'}",
        "task.max_length=32",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "row 2 has label 'Wrld'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "metrics.json").exists()


def test_missing_model_weights_is_named(tmp_path, topic_files, tiny_models):
    empty = tmp_path / "model-without-weights"
    empty.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (empty / name).write_bytes((tiny_models["bert"] / name).read_bytes())
    cfg = compose_config(f"model.name_or_path={empty}", f"task.data_files.train={topic_files['train']}")
    with pytest.raises(FinetuneError, match="has no weights"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.trains
def test_unreachable_hub_is_detected_and_the_local_route_shown(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there: as unreachable as the Hub offline
    result = subprocess.run(
        [sys.executable, str(REPO / "run.py"), f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert "is unreachable" in output and "working offline" in output
    assert "Could not load data set 'fancyzhx/ag_news' from the Hugging Face Hub" in output
    assert "task.data_files.train=" in output and "model.name_or_path=" in output


def test_hub_model_miss_offline_is_one_message(tmp_path, topic_files):
    cfg = compose_config(
        "model.name_or_path=some-org/not-cached-model",
        f"task.data_files.train={topic_files['train']}",
        "task.validation_size=0.2",
    )
    with pytest.raises(
        FinetuneError, match="Could not load tokenizer 'some-org/not-cached-model' from the Hugging Face Hub"
    ):
        run(cfg, tmp_path)


@pytest.mark.trains
def test_a_loss_that_diverges_stops_the_run_and_names_the_step(tmp_path, topic_files, tiny_models):
    cfg = compose_config(
        f"model.name_or_path={tiny_models['bert']}",
        f"task.data_files.train={topic_files['train']}",
        "task.validation_size=0.2",
        "task.examples=[]",
        "hardware=cpu",
        *TINY_TRAINING,
        "trainer.learning_rate=1e12",
        "trainer.max_grad_norm=0",
    )
    with pytest.raises(
        FinetuneError,
        match=r"The (training loss|gradient norm) became (nan|inf) at step \d+ "
        r"\(learning rate .*Lower trainer.learning_rate",
    ):
        run(cfg, tmp_path)
    assert not (tmp_path / "model").exists() and not (tmp_path / "metrics.json").exists()


def test_going_offline_also_reaches_libraries_imported_earlier(monkeypatch):
    """In a sweep, an earlier job has imported the hub libraries: they must go offline too."""
    import datasets.config
    import huggingface_hub.constants

    from finetune.hub import go_offline_if_unreachable

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    go_offline_if_unreachable()
    assert huggingface_hub.constants.is_offline_mode() and datasets.config.HF_HUB_OFFLINE
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_metrics_hold_per_class_scores_and_confusion_matrices(topic_run):
    run_dir = topic_run
    metrics = read_json(run_dir / "metrics.json")
    for split, rows in (("validation", 40), ("test", 40)):
        report = metrics[split]
        assert report["confusion_matrix"]["labels"] == list(TOPICS)
        matrix = report["confusion_matrix"]["rows_true_columns_predicted"]
        assert sum(map(sum, matrix)) == rows and sum(matrix[i][i] for i in range(4)) / rows == pytest.approx(
            report["accuracy"]
        )
        assert [c["support"] for c in report["per_class"].values()] == [sum(row) for row in matrix]
        assert sum(c["f1"] for c in report["per_class"].values()) / 4 == pytest.approx(report["f1_macro"])


def test_confusion_matrices_are_pngs_and_tensorboard_images(topic_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = topic_run
    for split in ("validation", "test"):
        png = (run_dir / f"confusion_{split}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    accumulator = EventAccumulator(str(run_dir / "logs"))
    accumulator.Reload()
    assert {"confusion/validation", "confusion/test"} <= set(accumulator.Tags()["images"])
    image = accumulator.Images("confusion/validation")[-1]
    assert (
        image.width > 400 and image.height > 400 and image.step == read_json(run_dir / "metrics.json")["train"]["steps"]
    )


def test_model_card_describes_the_model_for_the_hub(topic_run):
    import yaml

    run_dir = topic_run
    card = (run_dir / "model" / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    meta = yaml.safe_load(front)
    metrics = read_json(run_dir / "metrics.json")
    assert meta["pipeline_tag"] == "text-classification" and meta["library_name"] == "transformers"
    results = {
        (r["dataset"]["split"], m["type"]): m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"]
    }
    assert results == {
        (s, k): round(metrics[s][k], 4) for s in ("validation", "test") for k in ("accuracy", "f1_macro")
    }
    assert "ag_news (local files)" in front and "base_model" not in meta  # a local folder has no hub id
    assert all(f"| {i} | {name} |" in body for i, name in enumerate(TOPICS))
    assert 'pipeline("text-classification"' in body and "| learning rate | 0.002 |" in body and "| seed | 42 |" in body
    assert f"| validation | {metrics['validation']['accuracy']:.4f} |" in body


def test_environment_records_versions_code_and_data(topic_run):
    import importlib.metadata

    run_dir = topic_run
    env = read_json(run_dir / "environment.json")
    for package in ("torch", "transformers", "datasets", "hydra-core"):
        assert env["packages"][package] == importlib.metadata.version(package)
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["hardware"]["device"] == "CPU" and env["hardware"]["precision"] in ("bf16", "fp32")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if commit.returncode == 0:  # a checkout: the commit the code came from, and whether it was modified
        assert env["code"]["git_commit"] == commit.stdout.strip() and isinstance(env["code"]["git_dirty"], bool)
    assert {split: d["rows"] for split, d in env["data"].items()} == {"train": 160, "validation": 40, "test": 40}
    assert all(len(d["sha256"]) == 64 for d in env["data"].values())
    assert env["command"].startswith("python run.py ") and "task=ag_news" in env["command"]


def test_a_rerun_from_the_saved_config_gives_identical_metrics(topic_run, tmp_path):
    """Same config and seed on the CPU: the same numbers, timing aside."""
    run_dir, cwd = topic_run, topic_run.parents[1]
    rerun_dir = tmp_path / "rerun"
    result = run_py(
        "--config-path", str(run_dir / ".hydra"), "--config-name", "config", f"hydra.run.dir={rerun_dir}", cwd=cwd
    )
    assert result.returncode == 0, result.output[-4000:]

    def without_timing(value):
        if isinstance(value, dict):
            return {
                k: without_timing(v)
                for k, v in value.items()
                if k not in ("runtime", "runtime_s", "samples_per_second", "steps_per_second")
            }
        return value

    first, second = read_json(run_dir / "metrics.json"), read_json(rerun_dir / "metrics.json")
    assert without_timing(second) == without_timing(first)
    assert read_json(rerun_dir / "environment.json")["data"] == read_json(run_dir / "environment.json")["data"]
