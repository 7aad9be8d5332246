"""Probabilities that mean what they say: temperatures fitted on validation, and the scores that measure it.

A temperature T divides the logits before the softmax (or each label's sigmoid): it changes how
sure the model sounds, never which class is on top. It is fitted by minimising the negative
log-likelihood on the validation split (Guo et al., 2017). The measures:

- expected calibration error (ECE): over 15 equal-width bins of the predicted probability, the
  row-weighted mean gap between the mean probability and the observed frequency (single-label:
  the predicted class's probability against being right; multi-label: every row-label
  probability against the label being present);
- negative log-likelihood (NLL): the mean of -log p(gold) (multi-label: binary cross-entropy
  per row-label pair);
- Brier score: the mean squared gap between the probabilities and the one-hot gold labels,
  summed over classes per row (multi-label: averaged over row-label pairs).

Risk-coverage: answer only the rows the model is surest of; the accuracy on the answered rows
at each share of rows answered, and the confidence that cut-off needs.
"""

from typing import Any, Dict, List, Sequence

BINS = 15
BINNING = "equal-width"
COVERAGES = (1.0, 0.9, 0.8, 0.7, 0.5)
LOG_T_RANGE = (-4.0, 4.0)  # T from 0.018 to 55: wider than any fine-tune needs


def softmax_nll(logits, truth, temperature: float = 1.0) -> float:
    """Mean -log p(gold class) of softmax(logits / T)."""
    import numpy as np
    import scipy.special

    log_p = scipy.special.log_softmax(np.asarray(logits, dtype="float64") / temperature, axis=-1)
    return float(-log_p[np.arange(len(log_p)), np.asarray(truth, dtype=int)].mean())


def sigmoid_nll(logits, truth, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of sigmoid(logits / T) against 0/1 ``truth`` (same shape)."""
    import numpy as np

    z, y = np.asarray(logits, dtype="float64") / temperature, np.asarray(truth, dtype="float64")
    return float((np.logaddexp(0.0, z) - y * z).mean())  # -y log s(z) - (1 - y) log(1 - s(z)), stably


def fit_temperature(nll, logits, truth) -> float:
    """The T that minimises ``nll(logits, truth, T)``; 1.0 (nothing changes) where no T does better than 1, or where
    the minimum runs to the edge of the range: a validation split the model gets all right is fitted best by T -> 0
    (every probability 1), which would make every later score 0 or 1."""
    import math

    from scipy.optimize import minimize_scalar

    if len(logits) == 0:
        return 1.0
    found = minimize_scalar(lambda log_t: nll(logits, truth, math.exp(log_t)), bounds=LOG_T_RANGE, method="bounded")
    temperature = math.exp(found.x)
    best = nll(logits, truth, temperature)
    # no minimum inside the range: an edge does as well (within rounding) as the point found
    at_edge = any(nll(logits, truth, math.exp(bound)) <= best + 1e-9 * (1 + abs(best)) for bound in LOG_T_RANGE)
    return temperature if not at_edge and best < nll(logits, truth, 1.0) else 1.0


def reliability(probability, outcome, bins: int = BINS):
    """Per equal-width bin of ``probability``: ``(mean probability, observed frequency, rows)``; empty bins left out."""
    import numpy as np

    probability, outcome = (
        np.asarray(probability, dtype="float64").ravel(),
        np.asarray(outcome, dtype="float64").ravel(),
    )
    which = np.minimum((probability * bins).astype(int), bins - 1)
    rows = np.bincount(which, minlength=bins)
    filled = rows > 0
    mean_p = np.bincount(which, weights=probability, minlength=bins)[filled] / rows[filled]
    frequency = np.bincount(which, weights=outcome, minlength=bins)[filled] / rows[filled]
    return mean_p, frequency, rows[filled]


def expected_calibration_error(probability, outcome, bins: int = BINS) -> float:
    """ECE over ``bins`` equal-width bins: the row-weighted mean |mean probability - observed frequency|."""
    import numpy as np

    mean_p, frequency, rows = reliability(probability, outcome, bins)
    return float((np.abs(mean_p - frequency) * rows).sum() / max(rows.sum(), 1))


def risk_coverage(confidence, correct, coverages: Sequence[float] = COVERAGES) -> List[Dict[str, Any]]:
    """Answering the surest ``coverage`` share of rows: how many, their accuracy, and the lowest confidence answered."""
    import math

    import numpy as np

    confidence, correct = np.asarray(confidence, dtype="float64"), np.asarray(correct, dtype=bool)
    order = np.argsort(-confidence, kind="stable")
    table = []
    for coverage in coverages:
        answered = max(1, math.ceil(coverage * len(order))) if len(order) else 0
        kept = order[:answered]
        table.append(
            {
                "coverage": float(coverage),
                "rows": int(answered),
                "accuracy": float(correct[kept].mean()) if answered else float("nan"),
                "min_confidence": float(confidence[kept[-1]]) if answered else float("nan"),
            }
        )
    return table


def scores_of(nll: float, brier: float, probability, outcome) -> Dict[str, float]:
    """The three calibration measures of one split, as metrics.json holds them."""
    return {"ece": expected_calibration_error(probability, outcome), "nll": float(nll), "brier": float(brier)}
