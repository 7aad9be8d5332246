"""Calibration, thresholds and abstention on hand-made numbers: no model, no process."""

import math

import numpy as np
import pytest

from finetune.errors import FinetuneError
from finetune.inference.answers import ABSTAINED, Answers, check_min_confidence
from finetune.tasks.calibration import (
    expected_calibration_error,
    fit_temperature,
    risk_coverage,
    sigmoid_nll,
    softmax_nll,
)
from finetune.tasks.multi_label import MultiLabel
from finetune.tasks.regression import Regression
from finetune.tasks.single_label import SingleLabel


def sampled(logits, temperature, rng, softmax=True):
    """Labels drawn from the probabilities that ``logits / temperature`` give: the truth a fit should find."""
    if softmax:
        p = np.exp(logits / temperature)
        p /= p.sum(axis=1, keepdims=True)
        return (p.cumsum(axis=1) > rng.random((len(p), 1))).argmax(axis=1)
    return (rng.random(logits.shape) < 1 / (1 + np.exp(-logits / temperature))).astype(int)


@pytest.mark.parametrize("temperature", [0.5, 2.5])
def test_a_known_temperature_is_recovered_within_5_percent(temperature):
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(20_000, 4)) * 3
    kind = SingleLabel(["a", "b", "c", "d"])
    fitted = kind.calibrate(sampled(logits, temperature, rng), logits)
    assert (
        fitted["temperature"] == pytest.approx(temperature, rel=0.05)
        and kind.temperatures == [fitted["temperature"]] * 4
    )
    multi = MultiLabel(["a", "b", "c"])
    multi_logits = rng.normal(size=(20_000, 3)) * 3
    multi.calibrate(sampled(multi_logits, temperature, rng, softmax=False), multi_logits)
    assert multi.temperatures == pytest.approx([temperature] * 3, rel=0.05)


def test_a_calibrated_model_keeps_t_1_and_nothing_moves():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5_000, 3)) * 2
    kind = SingleLabel(["a", "b", "c"])
    fitted = kind.calibrate(sampled(logits, 1.0, rng), logits)
    assert fitted["temperature"] == pytest.approx(1.0, rel=0.05)
    assert kind.same_decisions(logits, kind.calibrated(logits))
    assert SingleLabel(["a", "b"], calibration="none").calibrate([0, 1], logits[:2, :2]) == {
        "method": "none",
        "note": "task.calibration=none",
    }


def test_where_no_temperature_lowers_the_nll_t_stays_1():
    # the NLL of T is flat only for logits that are all equal: no T does better than 1, so 1 is kept
    logits, truth = np.zeros((4, 3)), np.array([0, 1, 2, 0])
    assert fit_temperature(softmax_nll, logits, truth) == 1.0
    kind = SingleLabel(["a", "b", "c"])
    assert kind.calibrate(truth, logits)["note"].startswith("no temperature lowered the validation NLL")
    # every row right with a margin: T -> 0 would lower the NLL without end (every probability 1); T stays 1
    separable = np.array([[2.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    assert fit_temperature(softmax_nll, separable, np.array([0, 1, 0])) == 1.0


def test_ece_nll_and_brier_against_hand_computed_values():
    kind = SingleLabel(["a", "b"])
    # probabilities 0.8/0.2 (right), 0.6/0.4 (wrong: gold b), 0.3/0.7 (right)
    p = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    scores = kind.calibration_scores(np.array([0, 1, 1]), np.log(p))
    assert scores["nll"] == pytest.approx(-(math.log(0.8) + math.log(0.4) + math.log(0.7)) / 3)
    assert scores["brier"] == pytest.approx((2 * 0.2**2 + 2 * 0.6**2 + 2 * 0.3**2) / 3)
    # confidences 0.8 (right), 0.6 (wrong), 0.7 (right): bins [0.8, 0.867), [0.6, 0.667), [0.667, 0.733) of 15
    assert scores["ece"] == pytest.approx((abs(0.8 - 1) + abs(0.6 - 0) + abs(0.7 - 1)) / 3)
    # two rows in one bin: |mean p - frequency| weighted by its rows
    assert expected_calibration_error([0.9, 0.92, 0.1], [1, 0, 0]) == pytest.approx((2 * abs(0.91 - 0.5) + 0.1) / 3)
    multi = MultiLabel(["a", "b"]).calibration_scores(
        np.array([[1, 0]]), np.log(np.array([[0.75, 0.25]]) / np.array([[0.25, 0.75]]))
    )
    assert multi["nll"] == pytest.approx(-math.log(0.75)) and multi["brier"] == pytest.approx(0.25**2)
    assert sigmoid_nll(np.zeros((2, 2)), np.array([[1, 0], [0, 1]])) == pytest.approx(math.log(2))
    assert Regression().calibration_scores([1.0], np.array([[1.0]])) is None


def test_a_rare_label_falls_back_to_the_shared_threshold():
    rng = np.random.default_rng(0)
    rows = 400
    truth = np.zeros((rows, 3), dtype=int)
    truth[:100, 0] = 1  # 100 positives: a threshold of its own
    truth[:3, 1] = 1  # 3 positives: scored low, as rare labels are; their own F1 cut-off would sit near 0.02
    truth[100:200, 2] = 1
    scores = np.clip(np.where(truth == 1, 0.7, 0.2) + rng.normal(0, 0.1, truth.shape), 0.001, 0.999)
    scores[:3, 1] = 0.03
    kind = MultiLabel(["common", "rare", "other"])
    thresholds = kind.tune_thresholds(truth, np.log(scores / (1 - scores)))
    assert thresholds[1] == kind.shared and 0.05 <= kind.shared <= 0.95  # not 0.02: three rows do not set a cut-off
    assert 0.3 < thresholds[0] < 0.6 and thresholds[0] != kind.shared
    assert MultiLabel.own_threshold(scores[:, 1], truth[:, 1]) < 0.05  # what the old per-label rule chose
    assert MultiLabel.shared_threshold(np.array([[0.9, 0.1]]), np.array([[0, 0]])) == 0.5  # no positives at all


def test_risk_coverage_answers_the_surest_rows_first():
    table = risk_coverage([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05], [1, 1, 1, 1, 1, 0, 1, 0, 0, 0])
    assert [(r["coverage"], r["rows"], r["accuracy"]) for r in table] == [
        (1.0, 10, 0.6),
        (0.9, 9, 6 / 9),
        (0.8, 8, 6 / 8),
        (0.7, 7, 6 / 7),
        (0.5, 5, 1.0),
    ]
    assert table[-1]["min_confidence"] == 0.5


def test_abstention_counts_rows_below_the_cut_off_and_reports_the_answered_rows():
    kind = SingleLabel(["a", "b"])
    p = np.array([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9], [0.55, 0.45]])
    truth = np.array([0, 1, 1, 1])
    answers = Answers(kind, 0.8)
    columns = answers.columns(p)
    assert columns["predicted"] == ["a", ABSTAINED, "b", ABSTAINED] and columns["abstained"] == [
        False,
        True,
        False,
        True,
    ]
    report = answers.report(truth, np.log(p))
    assert (report["answered"], report["abstained"], report["coverage"]) == (2, 2, 0.5)
    assert report["on_answered"]["accuracy"] == 1.0 and kind.evaluate(truth, np.log(p))["accuracy"] == 0.5
    assert answers.rows(p)[1]["predicted"] == ABSTAINED and answers.rows(p)[0][0]["label"] == "a"
    assert Answers(kind).columns(p) == kind.output_columns(p)
    with pytest.raises(FinetuneError, match="must be a probability in"):
        check_min_confidence(kind, 1.5)
    with pytest.raises(FinetuneError, match="a regression model gives no probabilities"):
        check_min_confidence(Regression(), 0.8)


def test_task_calibration_takes_temperature_or_none():
    from finetune.config.checks import validate
    from tests.helpers import compose_config

    validate(compose_config("task.calibration=none"))
    with pytest.raises(FinetuneError, match="task.calibration='platt' is not one of auto, temperature, none"):
        validate(compose_config("task.calibration=platt"))
