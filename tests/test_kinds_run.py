"""Each task kind through the real run.py on tiny models: files, metrics, pinned losses, pipeline and predict."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import (
    TINY_TRAINING,
    TOPICS,
    cli,
    multi_label_rows,
    printed,
    read_json,
    run_py,
    score_rows,
    write_csv,
)

# The training loss of each fixed tiny run (CPU, fp32, dropout with integer masks, seed 42),
# as torchtune pins its recipes' losses: a change in data handling, loss or optimisation shows up here first.
REFERENCE_LOSS = {
    "single_label_weighted": 1.3120921015739442,
    "multi_label": 0.4966094397008419,
    "regression": 0.7324794256128371,
}
CPU = ["hardware=cpu"]

pytestmark = (
    pytest.mark.uses_trained_runs
)  # with the session's trained runs under pytest -n: some are asked for by name


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory, topic_files, tiny_models) -> Path:
    run_dir = tmp_path_factory.mktemp("kinds") / "weighted"
    result = run_py(
        "task=ag_news",
        "task.class_weights=[1,3,1,1]",
        f"model.name_or_path={tiny_models['bert']}",
        f"task.data_files.train={topic_files['train']}",
        "task.validation_size=0.2",
        f"hydra.run.dir={run_dir}",
        *TINY_TRAINING,
        *CPU,
        "task.examples=[]",
        "trainer.num_train_epochs=2",
        cwd=run_dir.parent,
    )
    assert result.returncode == 0, result.output[-4000:]
    return run_dir


@pytest.mark.trains
@pytest.mark.parametrize("name", list(REFERENCE_LOSS))
def test_training_loss_is_pinned(name, request):
    run_dir = request.getfixturevalue(
        {"single_label_weighted": "weighted_run", "multi_label": "multi_label_run", "regression": "regression_run"}[
            name
        ]
    )
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["train"]["loss"] == pytest.approx(REFERENCE_LOSS[name], abs=1e-4)


def test_multi_label_tunes_saves_and_uses_thresholds(multi_label_run):
    run_dir, metrics = multi_label_run, read_json(multi_label_run / "metrics.json")
    saved = read_json(run_dir / "model" / "thresholds.json")["thresholds"]
    assert list(saved) == list(TOPICS) and all(0 < t < 1 for t in saved.values())
    for split in ("validation", "test"):
        report = metrics[split]
        assert {"f1_micro", "f1_macro", "f1_samples", "accuracy", "loss", "at_0.5", "per_class"} <= set(report)
        assert "confusion_matrix" not in report and [c["threshold"] for c in report["per_class"].values()] == list(
            saved.values()
        )
        assert (run_dir / f"per_label_{split}.png").read_bytes().startswith(b"\x89PNG") and not (
            run_dir / f"confusion_{split}.png"
        ).exists()
    assert metrics["test"]["f1_micro"] >= 0.6  # predicting every label scores 0.48 here
    output = printed(run_dir).read_text()
    assert "Examples (task.examples):" in output and "coach league goal treaty minister border" in output


def test_multi_label_model_loads_in_a_plain_pipeline_and_predicts_labels(multi_label_run, tmp_path):
    from transformers import pipeline

    run_dir = multi_label_run
    import torch

    classify = pipeline("text-classification", model=str(run_dir / "model"), top_k=None)
    assert classify.model.config.problem_type == "multi_label_classification"
    text = "coach league goal treaty minister border"
    scores = {s["label"]: s["score"] for s in classify([text])[0]}
    with torch.no_grad():
        logits = classify.model(**classify.tokenizer(text, return_tensors="pt")).logits[0]
    assert [scores[name] for name in TOPICS] == pytest.approx(
        torch.sigmoid(logits).tolist(), abs=1e-5
    )  # a sigmoid per label
    thresholds = read_json(run_dir / "model" / "thresholds.json")["thresholds"]
    above = {name for name in TOPICS if scores[name] >= thresholds[name]}
    top = cli("predict", str(run_dir), text)
    assert top.returncode == 0, top.stderr
    assert {label["label"] for label in json.loads(top.stdout)} == above  # exactly the labels above their thresholds
    rows = multi_label_rows(24, seed=31)
    source = write_csv(tmp_path / "in.csv", rows)
    output = tmp_path / "out.csv"
    shown = cli("predict", str(run_dir), "--input", str(source), "--output", str(output))
    assert shown.returncode == 0, shown.stderr
    assert {"f1_micro", "f1_samples"} <= set(
        json.loads(shown.stdout)["metrics"]
    ) and "on 24 labeled rows" in shown.stderr
    import pandas as pd

    written = pd.read_csv(output, keep_default_na=False)  # a row with no label above its threshold is an empty cell
    exact = np.mean(
        [set(filter(None, p.split(","))) == set(r["labels"].split(",")) for p, r in zip(written["predicted"], rows)]
    )
    assert json.loads(output.with_name("out.metrics.json").read_text())["accuracy"] == pytest.approx(exact)


def test_regression_scores_scatters_and_predicts_scores(regression_run, regression_files, tmp_path):
    from transformers import pipeline

    run_dir, metrics = regression_run, read_json(regression_run / "metrics.json")
    assert {"pearson", "spearman", "mse", "loss", "rows"} <= set(metrics["validation"]) and metrics["validation"][
        "rows"
    ] == 32
    assert (
        metrics["validation"]["pearson"] > 0.8 and metrics["test"] is None
    )  # ranks right (the tiny model's scale is still off)
    for name in ("scatter_validation.png",):
        assert (run_dir / name).read_bytes().startswith(b"\x89PNG")
    lines = (run_dir / "STS-B.tsv").read_text().splitlines()
    assert (
        lines[0] == "index\tprediction"
        and len(lines) == 21
        and all(len(line.split("\t")[1].split(".")[1]) == 3 for line in lines[1:])
    )
    classify = pipeline("text-classification", model=str(run_dir / "model"))
    assert classify.model.config.problem_type == "regression" and classify.model.config.num_labels == 1
    from finetune import Predictor

    predictor = Predictor.load(run_dir, precision="fp32")
    high, low = (
        predictor(("dog cat car house", "tree river yes yes yes")),
        predictor(("dog cat car house", "tree river city")),
    )
    assert set(high) == {"predicted"} and high["predicted"] > low["predicted"]
    assert classify({"text": "dog cat car house", "text_pair": "tree river yes yes yes"})["score"] == pytest.approx(
        high["predicted"], abs=1e-4
    )
    source = write_csv(tmp_path / "in.tsv", score_rows(20, seed=32), "\t", 3)
    shown = cli("predict", str(run_dir), "--input", str(source), "--output", str(tmp_path / "out.csv"))
    assert shown.returncode == 0, shown.stderr
    assert {"pearson", "spearman"} <= set(json.loads(shown.stdout)["metrics"]) and "on 20 labeled rows" in shown.stderr
    import pandas as pd

    written = pd.read_csv(tmp_path / "out.csv")
    assert list(written.columns[-1:]) == ["predicted"] and "confidence" not in written.columns


@pytest.mark.trains
def test_class_weights_are_used_and_recorded(weighted_run):
    run_dir, metrics = weighted_run, read_json(weighted_run / "metrics.json")
    assert metrics["train"]["class_weights"] == [1.0, 3.0, 1.0, 1.0]
    assert "| class weights | given: 1, 3, 1, 1 |" in (run_dir / "model" / "README.md").read_text()
    assert (run_dir / "confusion_validation.png").is_file() and "per_class" in metrics["validation"]
