"""The metrics registry: ``task.metrics: [accuracy, f1_macro]`` names entries of ``METRICS``.

Every metric is computed here, offline (scikit-learn, scipy): ``evaluate.load`` needs the Hub.
A metric takes the gold labels and the predictions as a task kind produces them: class ids
(single-label), 0/1 indicator matrices (multi-label) or scores (regression). This module
imports nothing heavy, so the config can be checked against it before any work starts.
"""

from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple

CLASSIFICATION = ("single_label", "multi_label")


@dataclass(frozen=True)
class Metric:
    compute: Callable  # (truth, predicted) -> float
    kinds: Tuple[str, ...]  # the task kinds it applies to
    greater_is_better: bool = True
    description: str = ""


def _accuracy(truth, predicted) -> float:
    from sklearn.metrics import accuracy_score

    return accuracy_score(truth, predicted)  # on indicator matrices: the exact-match ratio


def _f1(average: str) -> Callable:
    def f1(truth, predicted) -> float:
        from sklearn.metrics import f1_score

        return f1_score(truth, predicted, average=average, zero_division=0)

    return f1


def _matthews(truth, predicted) -> float:
    from sklearn.metrics import matthews_corrcoef

    return matthews_corrcoef(truth, predicted)


def _correlation(name: str) -> Callable:
    def correlation(truth, predicted) -> float:
        import numpy as np
        import scipy.stats

        if np.ptp(truth) == 0 or np.ptp(predicted) == 0:  # undefined for a constant: say 0, not NaN
            return 0.0
        return getattr(scipy.stats, name)(truth, predicted)[0]

    return correlation


def _mse(truth, predicted) -> float:
    from sklearn.metrics import mean_squared_error

    return mean_squared_error(truth, predicted)


METRICS: Dict[str, Metric] = {
    "accuracy": Metric(
        _accuracy, CLASSIFICATION, description="share of rows right (multi-label: all labels of the row right)"
    ),
    "f1_macro": Metric(_f1("macro"), CLASSIFICATION, description="mean of the per-class F1 scores"),
    "f1_micro": Metric(_f1("micro"), CLASSIFICATION, description="F1 over all decisions pooled"),
    "f1": Metric(_f1("binary"), ("single_label",), description="F1 of the positive class (id 1) of a two-class task"),
    "f1_samples": Metric(_f1("samples"), ("multi_label",), description="F1 per row, averaged over rows"),
    "matthews": Metric(_matthews, ("single_label",), description="Matthews correlation coefficient"),
    "pearson": Metric(_correlation("pearsonr"), ("regression",), description="Pearson correlation"),
    "spearman": Metric(_correlation("spearmanr"), ("regression",), description="Spearman rank correlation"),
    "mse": Metric(_mse, ("regression",), greater_is_better=False, description="mean squared error"),
}


def compute(names: Sequence[str], truth, predicted) -> Dict[str, float]:
    return {name: float(METRICS[name].compute(truth, predicted)) for name in names}


def greater_is_better(name: str) -> bool:
    """For ``metric_for_best_model``: ``loss`` and ``mse`` go down, every other metric up."""
    return name != "loss" and METRICS[name].greater_is_better


def metric_errors(kind: str, names: Sequence[str], best: str, num_labels: int) -> list:
    """Messages for metric names that do not exist or do not fit the task kind."""
    errors = []
    for name in names:
        if name not in METRICS:
            fitting = [m for m, metric in METRICS.items() if kind in metric.kinds]
            errors.append(f"task.metrics: unknown metric {name!r}; for a {kind} task use some of {', '.join(fitting)}.")
        elif kind not in METRICS[name].kinds:
            errors.append(f"task.metrics: {name!r} does not apply to a {kind} task ({METRICS[name].description}).")
        elif name == "f1" and num_labels != 2:
            errors.append(
                "task.metrics: 'f1' is the F1 of the positive class of a two-class task; "
                f"with {num_labels} classes use f1_macro or f1_micro."
            )
    if best != "loss" and best not in names:
        errors.append(f"task.metric_for_best_model={best!r} must be one of task.metrics {list(names)} or 'loss'.")
    return errors
