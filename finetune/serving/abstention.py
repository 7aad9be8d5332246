"""Abstention: answer only where the model is sure enough (``--min-confidence``, ``Predictor(min_confidence=...)``).

A row whose confidence (the kind's: the predicted class's probability; multi-label, its least
sure label decision) is below the cut-off is not answered: its prediction reads ``ABSTAINED``.
With calibrated probabilities (the default since runs fit a temperature) the cut-off means
what it says; the run's risk-coverage table (metrics.json, ``risk_coverage_<split>.png``)
shows the accuracy each cut-off buys and the share of rows it leaves answered.
"""

from typing import Any, Dict, List, Optional

from finetune.errors import FinetuneError

ABSTAINED = "(abstained)"  # the prediction cell of a row the model did not answer


def check_min_confidence(kind, min_confidence: Optional[float]) -> None:
    """A cut-off in (0, 1], for a kind with probabilities; anything else is refused in one line."""
    if min_confidence is None:
        return
    if not 0 < min_confidence <= 1:
        raise FinetuneError(f"--min-confidence {min_confidence}: must be a probability in (0, 1], e.g. 0.8.")
    if kind.confidence(kind.scores(_one_row(kind))) is None:
        raise FinetuneError(
            f"--min-confidence: a {kind.name} model gives no probabilities to abstain on; drop --min-confidence."
        )


def _one_row(kind):
    import numpy as np

    return np.zeros((1, kind.num_labels))


def answered_mask(kind, scores, min_confidence: Optional[float]):
    """True for the rows answered: all of them without a cut-off."""
    import numpy as np

    if min_confidence is None:
        return np.ones(len(scores), dtype=bool)
    return np.asarray(kind.confidence(scores)) >= min_confidence


def abstaining_columns(kind, scores, min_confidence: Optional[float]) -> Dict[str, List[Any]]:
    """The kind's output columns, with ``ABSTAINED`` in the prediction column of rows below the cut-off, and the confidence."""
    columns = kind.output_columns(scores)
    if min_confidence is None:
        return columns
    answered = answered_mask(kind, scores, min_confidence)
    prediction = next(iter(columns))  # predicted_label / predicted_labels
    columns[prediction] = [value if keep else ABSTAINED for value, keep in zip(columns[prediction], answered)]
    confidence = kind.confidence(scores).tolist()
    if columns.get("score") != confidence:  # single-label: the score column is the confidence already
        columns["confidence"] = confidence
    return {**columns, "abstained": (~answered).tolist()}


def abstention_report(kind, truth, logits, min_confidence: float) -> Dict[str, Any]:
    """Rows answered and abstained, the coverage, and the task's metrics on the answered rows only."""
    import numpy as np

    answered = answered_mask(kind, kind.scores(logits), min_confidence)
    truth = np.asarray(truth)
    report = {
        "min_confidence": min_confidence,
        "rows": int(len(answered)),
        "answered": int(answered.sum()),
        "abstained": int((~answered).sum()),
        "coverage": float(answered.mean()) if len(answered) else 0.0,
    }
    if answered.any():
        report["on_answered"] = kind.evaluate(truth[answered], np.asarray(logits)[answered])
    return report


def abstaining_output(kind, row_scores, min_confidence: Optional[float], top_k: Optional[int]) -> Any:
    """The ``Predictor``'s output for one text: the kind's, or ``{"label": ABSTAINED, ...}`` below the cut-off."""
    output = kind.output(row_scores, top_k)
    if min_confidence is None:
        return output
    confidence = float(kind.confidence(row_scores[None, :])[0])
    if confidence >= min_confidence:
        return output
    return {"label": ABSTAINED, "confidence": confidence, "best_guess": output}
