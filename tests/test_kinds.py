"""Task kinds and the metrics registry: label parsing, losses, thresholds and metrics, unit by unit."""

import math

import numpy as np
import pytest

from finetune.tasks.metrics import METRICS, compute, greater_is_better, metric_errors
from finetune.tasks.multi_label import MultiLabel
from finetune.tasks.registry import KINDS
from finetune.tasks.regression import Regression
from finetune.tasks.single_label import SingleLabel

NAMES = ["joy", "anger", "fear"]


def test_the_registry_computes_the_known_values():
    truth, predicted = [0, 1, 1, 0, 1, 1], [0, 1, 0, 0, 1, 1]
    scores = compute(["accuracy", "f1", "f1_macro", "f1_micro", "matthews"], truth, predicted)
    assert scores["accuracy"] == pytest.approx(5 / 6)
    assert scores["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1))  # tp 3, fn 1, fp 0
    assert scores["f1_macro"] == pytest.approx((0.8 + 6 / 7) / 2) and scores["f1_micro"] == pytest.approx(5 / 6)
    assert scores["matthews"] == pytest.approx((3 * 2 - 0 * 1) / math.sqrt(3 * 4 * 2 * 3))
    gold, values = [0.0, 1.0, 2.0, 3.0], [0.5, 1.0, 2.5, 2.0]
    regression = compute(["pearson", "spearman", "mse"], gold, values)
    assert regression["mse"] == pytest.approx((0.25 + 0 + 0.25 + 1) / 4) and regression["spearman"] == pytest.approx(
        0.8
    )
    assert regression["pearson"] == pytest.approx(np.corrcoef(gold, values)[0, 1])
    assert compute(["pearson"], [1.0, 2.0], [3.0, 3.0]) == {"pearson": 0.0}  # constant: 0, not NaN
    hot_truth, hot_predicted = np.array([[1, 0, 1], [0, 1, 0]]), np.array([[1, 0, 0], [0, 1, 0]])
    multi = compute(["accuracy", "f1_samples", "f1_micro"], hot_truth, hot_predicted)
    assert multi == pytest.approx({"accuracy": 0.5, "f1_samples": (2 / 3 + 1) / 2, "f1_micro": 0.8})
    assert not greater_is_better("mse") and not greater_is_better("loss") and greater_is_better("matthews")


def test_metric_names_are_checked_against_the_kind():
    assert metric_errors("single_label", ["accuracy", "f1"], "f1", 2) == []
    assert "unknown metric 'auc'" in metric_errors("single_label", ["auc"], "loss", 2)[0]
    assert "does not apply to a regression task" in metric_errors("regression", ["accuracy"], "accuracy", 1)[0]
    assert "must be one of task.metrics" in metric_errors("regression", ["pearson"], "spearman", 1)[0]
    assert all(kind.default_metrics and set(kind.default_metrics) <= set(METRICS) for kind in KINDS.values())


def test_single_label_reads_names_and_ids_and_weighs_classes():
    kind = SingleLabel(NAMES)
    assert [kind.parse(v) for v in ["anger", " fear ", 0, "2", 1.0, "3", "Joy", None, True]] == [
        1,
        2,
        0,
        2,
        1,
        None,
        None,
        None,
        None,
    ]
    assert kind.fit([0, 0, 0, 1, 2, 2]) is None  # no class_weights: plain cross-entropy
    assert SingleLabel(NAMES, class_weights="balanced").fit([0, 0, 0, 1, 2, 2]) == pytest.approx(
        [6 / 9, 2.0, 1.0]
    )  # n / (classes x count)
    assert (
        kind.model_config()["problem_type"] == "single_label_classification" and kind.model_config()["num_labels"] == 3
    )


def test_weighted_cross_entropy_matches_torch():
    import torch

    kind = SingleLabel(NAMES, class_weights=[1.0, 2.0, 0.5])
    kind.fit([0, 1, 2])
    logits, labels = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), torch.tensor([0, 2])
    expected = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5]))(logits, labels)
    assert kind.loss(logits, labels).item() == pytest.approx(expected.item())


def test_multi_label_reads_lists_and_delimited_cells():
    kind = MultiLabel(NAMES, label_separator=";")
    assert kind.parse("joy;fear") == [1.0, 0.0, 1.0] and kind.parse("1") == [0.0, 1.0, 0.0]
    assert kind.parse(["anger", 2]) == [0.0, 1.0, 1.0] and kind.parse("") == [0.0, 0.0, 0.0]
    assert kind.parse("joy;hope") is None and kind.parse("0;7") is None
    assert MultiLabel(NAMES).parse("0,2") == [1.0, 0.0, 1.0]
    assert MultiLabel(NAMES).fit(np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 1]])) is None  # no class_weights


def test_multi_label_pos_weight_is_negatives_per_positive():
    import torch

    kind = MultiLabel(NAMES, class_weights="balanced")
    assert kind.fit(np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 1]])) == pytest.approx([1 / 3, 3.0, 1 / 3])
    logits, labels = torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[1.0, 0.0, 1.0]])
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(kind.weights))(logits, labels)
    assert kind.loss(logits, labels).item() == pytest.approx(expected.item())


def test_thresholds_maximise_each_labels_f1():
    kind = MultiLabel(NAMES)
    kind.MIN_POSITIVES = 1  # four rows: a label with one positive gets its own threshold here
    # label 0: positives score 0.3 and 0.25, negatives 0.2 and 0.1 -> any cut-off in (0.2, 0.25] is perfect
    # label 1: no positives -> the shared cut-off, best micro-F1 over all labels: 0.21
    # label 2: positives are the top two of four scores
    probabilities = np.array([[0.3, 0.9, 0.8], [0.25, 0.1, 0.7], [0.2, 0.2, 0.6], [0.1, 0.3, 0.1]])
    truth = np.array([[1, 0, 1], [1, 0, 1], [0, 0, 0], [0, 0, 0]])
    logits = np.log(probabilities / (1 - probabilities))
    thresholds = kind.tune_thresholds(truth, logits)
    assert 0.2 < thresholds[0] <= 0.25 and thresholds[1] == kind.shared == 0.21 and 0.6 < thresholds[2] <= 0.7
    report = kind.report(truth, logits)
    assert report["per_class"]["joy"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "support": 2,
        "threshold": thresholds[0],
    }
    # tuned: 4 right, 2 false "anger" (0.9 and 0.3 at the shared 0.21); at 0.5: joy missed twice, fear once too many
    assert report["f1_micro"] == pytest.approx(8 / 10) and report["at_0.5"]["f1_micro"] == pytest.approx(0.5)
    assert kind.output(np.array([0.24, 0.9, 0.6]))[0] == {"label": "anger", "score": 0.9}
    assert [o["label"] for o in kind.output(np.array([0.24, 0.9, 0.6]))] == ["anger", "joy"]
    assert kind.prediction_cell(np.array([1, 0, 1])) == "joy,fear"


def test_regression_squeezes_and_refuses_a_broadcast():
    import torch

    kind = Regression(["similarity"])
    assert kind.num_labels == 1 and kind.model_config()["problem_type"] == "regression"
    assert [kind.parse(v) for v in ["3.800", 4, " 0.5", "nan", "high", None]] == [3.8, 4.0, 0.5, None, None, None]
    logits, labels = torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 2.0])
    assert kind.loss(logits, labels).item() == pytest.approx(1.0)
    with pytest.raises(AssertionError, match="regression logits"):
        kind.loss(torch.tensor([1.0, 3.0]), labels)  # (N,) against (N,): a head of the wrong shape
    assert kind.scores(np.array([[1.5], [2.5]])).tolist() == [1.5, 2.5] and kind.output(np.float64(3.71)) == {
        "predicted": 3.71
    }
    assert "no classes to weight" in Regression(class_weights="balanced").config_errors()[0]


@pytest.mark.parametrize("architecture", ["bert", "distilbert", "roberta", "xlnet", "deberta"])
def test_a_regression_head_starts_at_the_training_mean(architecture, tiny_models):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kind = Regression(["similarity"])
    kind.fit(np.array([1.0, 2.0, 4.5]))
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_models[architecture], **kind.model_config(), ignore_mismatched_sizes=True
    )
    kind.prepare_model(model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[architecture])
    model.eval()
    with torch.no_grad():
        output = model(**tokenizer(["dog cat", "river city man"], padding=True, return_tensors="pt")).logits
    assert output.shape == (2, 1) and abs(output.mean().item() - 2.5) < 0.5  # near the mean, not near 0


def test_each_kind_lays_out_its_examples_and_sorts_its_mistakes_worst_first():
    import pandas as pd

    single = SingleLabel(NAMES)
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    table = pd.DataFrame(single.example_columns([0, 0, 1, 2], scores))
    assert table["gold"].tolist() == ["joy", "joy", "anger", "fear"] and table["predicted"].tolist() == [
        "joy",
        "anger",
        "fear",
        "fear",
    ]
    assert table["correct"].tolist() == [True, False, False, True] and table["p_anger"].tolist() == [0.2, 0.8, 0.3, 0.1]
    assert single.mistakes(table)["confidence"].tolist() == [0.8, 0.5]  # most confident wrong first
    assert single.confusions(single.mistakes(table)) == [("joy", "anger", 1), ("anger", "fear", 1)]
    gold, predicted = single.gold_and_predicted(table)
    assert gold.tolist() == [0, 0, 1, 2] and predicted.tolist() == [0, 1, 2, 2]

    multi = MultiLabel(NAMES)
    truth = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0]])
    table = pd.DataFrame(multi.example_columns(truth, np.array([[0.9, 0.1, 0.6], [0.3, 0.2, 0.1], [0.6, 0.95, 0.1]])))
    assert table["gold"].tolist() == ["joy,fear", "anger", "joy"] and table["predicted"].tolist() == [
        "joy,fear",
        "",
        "joy,anger",
    ]
    assert table["correct"].tolist() == [True, False, False]
    assert table["confidence"].tolist() == pytest.approx(
        [0.6, 0.8, 0.95]
    )  # right: least sure decision; wrong: surest mistake
    assert multi.mistakes(table)["predicted"].tolist() == ["joy,anger", ""]
    gold, predicted = multi.gold_and_predicted(table)
    assert gold.tolist() == truth.tolist() and predicted.tolist() == [[1, 0, 1], [0, 0, 0], [1, 1, 0]]

    regression = Regression()
    table = pd.DataFrame(regression.example_columns([1.0, 2.0, 3.0], np.array([1.5, 0.5, 3.1])))
    assert table["error"].tolist() == pytest.approx([0.5, -1.5, 0.1])
    assert regression.mistakes(table)["gold"].tolist() == [2.0, 1.0, 3.0] and regression.confusions(table) == []


def test_every_kind_names_its_columns_in_one_vocabulary():
    """The run's predictions, the predict command's columns and the answers say predicted, confidence, p_<label>."""
    from finetune.inference.answers import ABSTAINED, Answers

    scores = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    single, multi = SingleLabel(NAMES), MultiLabel(NAMES)
    probabilities = ["p_joy", "p_anger", "p_fear"]
    for kind, truth in ((single, [0, 1]), (multi, np.array([[1, 0, 0], [0, 1, 0]]))):
        assert list(kind.example_columns(truth, scores)) == [
            "gold",
            "predicted",
            "correct",
            "confidence",
            *probabilities,
        ]
        assert list(Answers(kind).columns(scores, all_scores=True)) == ["predicted", "confidence", *probabilities]
        abstaining = Answers(kind, 0.99)
        assert list(abstaining.columns(scores)) == ["predicted", "confidence", "abstained"]
        assert abstaining.rows(scores)[0] == {
            "predicted": ABSTAINED,
            "confidence": pytest.approx(kind.confidence(scores)[0]),
            "abstained": True,
            "best_guess": kind.output(scores[0]),
        }
    assert single.output_columns(scores) == {"predicted": ["joy", "joy"], "confidence": [0.7, 0.4]}
    # multi-label: the labels above their thresholds (0.5 untuned); how sure: the least sure label decision
    assert multi.output_columns(scores) == {"predicted": ["joy", ""], "confidence": pytest.approx([0.7, 0.6])}
    regression = Regression()
    values = np.array([1.5, 0.25])
    assert regression.output_columns(values) == {"predicted": [1.5, 0.25]} and regression.output(values[0]) == {
        "predicted": 1.5
    }
    assert list(regression.example_columns([1.0, 0.0], values)) == ["gold", "predicted", "error"]
    assert list(Answers(regression).columns(values, all_scores=True)) == ["predicted"]
    assert [list(item) for item in single.output(scores[0])] == [["label", "score"]] * 3  # pipeline's and TEI's shape


def test_tables_of_earlier_versions_are_read_in_the_current_names():
    import pandas as pd

    from finetune.tasks.vocabulary import current

    # a multi-label run's parquet before the vocabulary: score_<label>
    multi = pd.DataFrame({"row": [0], "gold": ["joy"], "predicted": ["joy"], "correct": [True], "confidence": [0.9],
                          "score_joy": [0.9], "score_anger": [0.1]})  # fmt: skip
    assert list(current(multi).columns) == ["row", "gold", "predicted", "correct", "confidence", "p_joy", "p_anger"]
    # the predict command's columns before it: predicted_label(s) / predicted_score, score, score_<label>
    old = pd.DataFrame({"text": ["a"], "predicted_label": ["joy"], "score": [0.9], "score_joy": [0.9]})
    assert list(current(old).columns) == ["text", "predicted", "confidence", "p_joy"]
    assert list(current(pd.DataFrame({"predicted_score": [1.5]})).columns) == ["predicted"]
    # a text column that only looks old stays as it is where the labels are known; current names are never renamed
    texts = pd.DataFrame({"score_comment": ["x"], "score": [1], "p_joy": [0.5], "score_joy": [0.4]})
    assert list(current(texts, labels=NAMES).columns) == ["score_comment", "score", "p_joy", "score_joy"]
