"""Calibration, abstention and the label audit in real runs of the tiny models
(the session's runs, one k-fold sweep)."""

import csv
import json

import numpy as np
import pytest

from finetune import Predictor
from finetune.inference.answers import ABSTAINED
from finetune.serving.export import main as export_main
from finetune.serving.predict import main as predict_main
from tests.helpers import TINY_TRAINING, printed, read_json, run_py, topic_rows, write_csv

TEXTS = [
    "coach league goal the season match",
    "treaty minister border vote",
    "market shares profit bank",
    "chip software data network",
]


def test_a_run_fits_a_temperature_and_reports_calibration_on_every_scored_split(topic_run):
    metrics = read_json(topic_run / "metrics.json")
    fitted = metrics["validation"]["calibration"]["fitted"]
    saved = read_json(topic_run / "model" / "calibration.json")
    assert (
        fitted["method"] == "temperature"
        and set(saved["temperatures"].values()) == {fitted["temperature"]}
        and saved["folded_into_last_layer"]
    )
    for split in ("validation", "test"):
        calibration = metrics[split]["calibration"]
        assert calibration["binning"] == "15 equal-width bins" and set(calibration["before"]) == set(
            calibration["after"]
        ) == {"ece", "nll", "brier"}
        assert [row["coverage"] for row in metrics[split]["risk_coverage"]] == [1.0, 0.9, 0.8, 0.7, 0.5]
        assert metrics[split]["risk_coverage"][0]["accuracy"] == pytest.approx(
            metrics[split]["accuracy"]
        )  # all rows answered: the accuracy
        for picture in ("reliability", "risk_coverage", "confusion"):
            assert (topic_run / f"{picture}_{split}.png").read_bytes().startswith(b"\x89PNG")
    # fitted on validation to lower its NLL: it does (or T stays 1 and nothing changes)
    assert (
        metrics["validation"]["calibration"]["after"]["nll"]
        <= metrics["validation"]["calibration"]["before"]["nll"] + 1e-9
    )
    card, output = (topic_run / "model" / "README.md").read_text(), printed(topic_run).read_text()
    for text in (card, output):
        assert "Calibration fitted on validation: one temperature T = " in text and "Risk-coverage (test)" in text


def test_the_folded_layer_gives_the_logits_divided_by_t_through_pipeline_and_onnx(topic_run, copy_of):
    import scipy.special
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from finetune.tasks.single_label import SingleLabel

    run, temperature = copy_of(topic_run), 2.5
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    with torch.no_grad():
        raw_logits = model(**tokenizer(TEXTS, return_tensors="pt", padding=True)).logits.numpy()
    kind = SingleLabel(labels)
    kind.temperatures = [temperature] * len(labels)
    kind.fold_temperatures(model)  # what a run does before it saves the model
    model.save_pretrained(run / "model")
    expected = scipy.special.softmax(raw_logits / temperature, axis=1)
    served = pipeline("text-classification", model=str(run / "model"), top_k=None)(TEXTS)
    from_pipeline = np.array([[{d["label"]: d["score"] for d in row}[label] for label in labels] for row in served])
    np.testing.assert_allclose(from_pipeline, expected, atol=1e-5)
    assert export_main([str(run)]) == 0
    np.testing.assert_allclose(Predictor.load(run, backend="onnx").logits(TEXTS), raw_logits / temperature, atol=1e-4)


def test_min_confidence_abstains_counts_and_reports_the_answered_rows(topic_run, tmp_path, capsys):
    rows = [{"text": r["text"], "label": r["label"]} for r in topic_rows(40, seed=5)]
    source, output = write_csv(tmp_path / "in.csv", rows), tmp_path / "out.csv"
    confidences = Predictor.load(topic_run).scores([r["text"] for r in rows]).max(axis=1)
    cut = round(float(np.median(confidences)), 3)
    below = int((confidences < cut).sum())
    assert 0 < below < len(rows)  # the cut-off splits these rows (else the test tells nothing)
    predictor = Predictor.load(topic_run, min_confidence=cut)
    answers = predictor([r["text"] for r in rows])
    assert sum(isinstance(a, dict) and a["predicted"] == ABSTAINED and a["abstained"] for a in answers) == below
    assert (
        predict_main(
            [
                str(topic_run),
                "--input",
                str(source),
                "--output",
                str(output),
                "--min-confidence",
                str(cut),
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert json.loads(printed.out)["abstained"] == below
    printed_lines = printed.err
    with output.open(newline="") as f:
        written = list(csv.DictReader(f))
    assert sum(r["predicted"] == ABSTAINED for r in written) == sum(r["abstained"] == "True" for r in written) == below
    abstention = json.loads(output.with_name("out.metrics.json").read_text())["abstention"]
    assert (abstention["answered"], abstention["abstained"], abstention["coverage"]) == (
        len(rows) - below,
        below,
        pytest.approx(1 - below / len(rows)),
    )
    answered = [r for r in written if r["predicted"] != ABSTAINED]
    assert abstention["on_answered"]["accuracy"] == pytest.approx(
        np.mean([r["predicted"] == r["label"] for r in answered])
    )
    assert (
        f"Abstained on {below} of {len(rows)} rows (confidence below {cut:g})" in printed_lines
        and "answered rows" in printed_lines
    )


def test_multi_label_calibrates_per_label_and_regression_not_at_all(multi_label_run, regression_run):
    metrics = read_json(multi_label_run / "metrics.json")
    fitted = metrics["validation"]["calibration"]["fitted"]
    assert set(fitted["temperatures"]) == set(read_json(multi_label_run / "model" / "calibration.json")["temperatures"])
    assert fitted["thresholds"]["min_positives_for_own"] == 30 and 0.05 <= fitted["thresholds"]["shared"] <= 0.95
    assert "30 positives" in read_json(multi_label_run / "model" / "thresholds.json")["rule"]
    regression = read_json(regression_run / "metrics.json")
    assert (
        "calibration" not in regression["validation"] and not (regression_run / "model" / "calibration.json").exists()
    )
    assert not list(regression_run.glob("reliability_*.png"))


@pytest.mark.trains
@pytest.mark.slow
def test_a_k_fold_sweep_writes_one_out_of_fold_score_per_train_row_and_a_label_audit(
    tmp_path, topic_files, tiny_models
):
    sweep = tmp_path / "sweep"
    result = run_py(
        "-m",
        "task=ag_news",
        f"model.name_or_path={tiny_models['bert']}",
        f"task.data_files.train={topic_files['train']}",
        "task.folds=3",
        "task.fold=0,1,2",
        "task.examples=[]",
        f"hydra.sweep.dir={sweep}",
        *TINY_TRAINING,
        "hardware=cpu",
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.output[-4000:]
    train_rows = sum(1 for _ in topic_files["train"].open()) - 1
    parts = [
        train_rows_of(job / "out_of_fold.parquet")
        for job in sorted(sweep.iterdir())
        if (job / "out_of_fold.parquet").exists()
    ]
    assert len(parts) == 3 and sorted(row for part in parts for row in part) == list(
        range(train_rows)
    )  # each train row once
    with (sweep / "label_audit.csv").open(newline="") as f:
        audit = list(csv.DictReader(f))
    assert list(audit[0]) == ["row", "text", "given_label", "suggested_label", "score", "flagged"]
    assert sorted(int(r["row"]) for r in audit) == list(range(train_rows))
    scores = [float(r["score"]) for r in audit]
    assert scores == sorted(scores)  # most likely wrong first
    assert "[label_audit.csv](label_audit.csv)" in (sweep / "summary.md").read_text()


def train_rows_of(path):
    import pandas as pd

    return pd.read_parquet(path)["train_row"].tolist()
