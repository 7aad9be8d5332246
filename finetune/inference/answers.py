"""Answers: the one road from a model's scores to what a caller gets, for the ``Predictor``, the predict
command and the server alike.

An answer is the task kind's: labels ranked by probability (single-label, ``top_k`` of them),
the labels above their thresholds (multi-label), or ``{"predicted": x}`` (regression). With a
``min_confidence`` cut-off a text the model is less sure of is not answered (abstention): its
answer's ``predicted`` reads ``ABSTAINED``, with the confidence and the model's best guess. The
names of the fields and of the columns are finetune/tasks/vocabulary.py's. The confidence is the
kind's: the predicted class's probability; multi-label, its least sure label decision. With
calibrated probabilities (runs fit a temperature by default) the cut-off means what it says; the
run's risk-coverage table (metrics.json, ``risk_coverage_<split>.png``) shows what each cut-off buys.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from finetune.errors import FinetuneError
from finetune.tasks.vocabulary import ABSTAINED, ABSTAINED_COLUMN, BEST_GUESS, CONFIDENCE, PREDICTED, probability


def check_min_confidence(kind, min_confidence: Optional[float]) -> None:
    """A cut-off in (0, 1], for a kind with probabilities; anything else is refused in one line."""
    if min_confidence is None:
        return
    if isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float)):
        raise FinetuneError(f"min_confidence {min_confidence!r}: must be a probability in (0, 1], e.g. 0.8.")
    if not 0 < min_confidence <= 1:
        raise FinetuneError(f"--min-confidence {min_confidence}: must be a probability in (0, 1], e.g. 0.8.")
    if kind.confidence(kind.scores(_one_row(kind))) is None:
        raise FinetuneError(
            f"--min-confidence: a {kind.name} model gives no probabilities to abstain on; drop --min-confidence."
        )


def _one_row(kind):
    import numpy as np

    return np.zeros((1, kind.num_labels))


@dataclass(frozen=True)
class Answers:
    """How scores become answers: the kind, and the abstention cut-off (None: every text is answered)."""

    kind: Any  # finetune.tasks.kind.TaskKind
    min_confidence: Optional[float] = None

    def __post_init__(self) -> None:
        check_min_confidence(self.kind, self.min_confidence)

    def answered(self, scores):
        """True for the rows answered: all of them without a cut-off."""
        import numpy as np

        if self.min_confidence is None:
            return np.ones(len(scores), dtype=bool)
        return np.asarray(self.kind.confidence(scores)) >= self.min_confidence

    def rows(self, scores, top_k: Optional[int] = None) -> List[Any]:
        """One answer per row of ``scores``: the kind's, or ``{"predicted": ABSTAINED, ...}`` below the cut-off."""
        outputs = [self.kind.output(row, top_k) for row in scores]
        if self.min_confidence is None:
            return outputs
        confidence = self.kind.confidence(scores)
        return [
            output
            if sure >= self.min_confidence
            else {PREDICTED: ABSTAINED, CONFIDENCE: float(sure), ABSTAINED_COLUMN: True, BEST_GUESS: output}
            for output, sure in zip(outputs, confidence)
        ]

    def columns(self, scores, all_scores: bool = False) -> Dict[str, List[Any]]:
        """The answers as table columns: the kind's (``predicted``, ``confidence``), ``ABSTAINED`` in ``predicted``
        of the rows below the cut-off with an ``abstained`` column, and with ``all_scores`` a ``p_<label>`` column
        per class."""
        columns = self.kind.output_columns(scores)
        if self.min_confidence is not None:
            answered = self.answered(scores)
            columns[PREDICTED] = [value if keep else ABSTAINED for value, keep in zip(columns[PREDICTED], answered)]
            columns[ABSTAINED_COLUMN] = (~answered).tolist()
        if all_scores and scores.ndim == 2:
            for i, label in enumerate(self.kind.label_names):
                columns[probability(label)] = scores[:, i].tolist()
        return columns

    def report(self, truth, logits) -> Dict[str, Any]:
        """Rows answered and abstained, the coverage, and the task's metrics on the answered rows only."""
        import numpy as np

        answered = self.answered(self.kind.scores(logits))
        truth = np.asarray(truth)
        report = {
            "min_confidence": self.min_confidence,
            "rows": int(len(answered)),
            "answered": int(answered.sum()),
            "abstained": int((~answered).sum()),
            "coverage": float(answered.mean()) if len(answered) else 0.0,
        }
        if answered.any():
            report["on_answered"] = self.kind.evaluate(truth[answered], np.asarray(logits)[answered])
        return report


def rounded(value: Any) -> Any:
    """Scores to 3 decimals, for printing."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value
