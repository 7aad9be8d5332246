"""Regression: one score per text (STS-B's similarity), mean squared error."""

import logging
import math
from typing import Any, List, Optional, Sequence

from finetune.errors import FinetuneError
from finetune.tasks.kind import TaskKind
from finetune.tasks.vocabulary import ERROR, GOLD, PREDICTED

log = logging.getLogger(__name__)


class Regression(TaskKind):
    """A score per row (GLUE STS-B: 0-5); one output, mean squared error."""

    name = "regression"
    description = "text regression (one score)"
    problem_type = "regression"
    default_metrics = ("pearson", "spearman", "mse")
    # A score has no label to agree on: two scores count as the same answer when they are
    # closer than 1% of the range the reference model's scores span.
    agreement_rule = "scores within 1% of the range of the reference scores"

    def __init__(self, label_names: Sequence[str] = (), *args, **kwargs):
        super().__init__(list(label_names) or ["score"], *args, **kwargs)

    def agreement(self, reference_logits, other_logits) -> float:
        import numpy as np

        reference, other = self.scores(reference_logits), self.scores(other_logits)
        if not len(reference):
            return 1.0
        tolerance = 0.01 * max(float(np.ptp(reference)), 1e-6)
        return float((np.abs(reference - other) <= tolerance).mean())

    def parse(self, value: Any) -> Optional[float]:
        if isinstance(value, bool) or value is None:
            return None
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None

    def expected(self) -> str:
        return "not a number"

    def label_feature(self):
        from datasets import Value

        return Value("float32")

    def describe(self, labels) -> str:
        import numpy as np

        values = np.asarray(labels, dtype=float)
        return f"mean {values.mean():.3f}, sd {values.std():.3f}, range {values.min():g} to {values.max():g}"

    def config_errors(self) -> List[str]:
        errors = []
        if self.num_labels != 1:
            errors.append(
                "task.label_names: a regression task predicts one score; "
                f"give at most one name (got {self.label_names})."
            )
        if self.class_weights_setting is not None:
            errors.append(
                "task.class_weights: a regression task has no classes to weight; set task.class_weights=null."
            )
        return errors

    def _balanced_weights(self, train_labels) -> List[float]:
        raise FinetuneError(
            "task.class_weights: a regression task has no classes to weight; set task.class_weights=null."
        )

    def fit(self, train_labels) -> Optional[List[float]]:
        import numpy as np

        self.label_mean = float(np.mean(train_labels))
        return super().fit(train_labels)

    def prepare_model(self, model) -> None:
        # The fresh head starts at 0 and Adam moves each weight by about the learning rate per
        # step, so with fine-tuning rates it cannot reach far-off targets (STS-B: 0-5) in a few
        # hundred steps: predictions were capped near 3.6. Starting the output at the training
        # mean halves the distance.
        import torch

        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1][-1]
        with torch.no_grad():
            head.bias.fill_(self.label_mean)

    def loss(self, logits, labels):
        import torch.nn.functional as F

        # (N, 1) against (N,) would broadcast to (N, N) and silently train on nonsense.
        assert logits.shape == (labels.shape[0], 1), (
            f"regression logits {tuple(logits.shape)} for labels {tuple(labels.shape)}"
        )
        return F.mse_loss(logits.float().squeeze(-1), labels.float())

    def scores(self, logits):
        import numpy as np

        logits = np.asarray(logits, dtype="float64")
        assert logits.ndim == 2 and logits.shape[1] == 1, f"regression logits of shape {logits.shape}, expected (N, 1)"
        return logits[:, 0]

    def predict(self, scores):
        return scores

    baseline = "the training mean"

    def baseline_logits(self, train_labels, rows: int):
        import numpy as np

        return np.full((rows, 1), float(np.mean(np.asarray(train_labels, dtype="float64"))))

    def figure(self, report, truth, logits, title):
        from finetune.tasks.figures import scatter_figure

        return "scatter", scatter_figure(truth, self.scores(logits), title)

    def output(self, row_scores, top_k=None):
        return {PREDICTED: float(row_scores)}

    def prediction_cell(self, prediction, as_ids=False):
        return f"{float(prediction):.3f}"

    def output_columns(self, scores):
        return {PREDICTED: scores.tolist()}

    def example_columns(self, truth, scores):
        import numpy as np

        truth = np.asarray(truth, dtype=float)
        return {GOLD: truth.tolist(), PREDICTED: scores.tolist(), ERROR: (scores - truth).tolist()}

    def mistakes(self, table):
        """Every row, largest error first: a score is never simply right or wrong."""
        return table.iloc[table[ERROR].abs().argsort(kind="stable")[::-1]]

    def confusions(self, mistakes, top=5):
        return []  # no classes to confuse
