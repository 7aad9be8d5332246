"""Single-label classification: one class per text, softmax and cross-entropy."""

import logging
from typing import Any, Dict, List, Optional

from finetune.errors import FinetuneError
from finetune.tasks.kind import TaskKind, label_index
from finetune.tasks.vocabulary import CONFIDENCE, CORRECT, GOLD, LABEL, PREDICTED, SCORE, probability

log = logging.getLogger(__name__)


class SingleLabel(TaskKind):
    """One class per row out of ``label_names``; softmax and (weighted) cross-entropy."""

    name = "single_label"
    description = "text classification ({n} classes)"
    problem_type = "single_label_classification"
    default_metrics = ("accuracy", "f1_macro")
    stratify = True
    agreement_rule = "the same predicted class"

    def parse(self, value: Any) -> Optional[int]:
        label_id = label_index(value, self.ids)
        return label_id if label_id is not None and 0 <= label_id < self.num_labels else None

    def expected(self) -> str:
        return f"neither one of task.label_names {self.label_names} nor an id 0-{self.num_labels - 1}"

    def label_feature(self):
        from datasets import ClassLabel

        return ClassLabel(names=self.label_names)

    def describe(self, labels) -> str:
        import numpy as np

        counts = np.bincount(np.asarray(labels, dtype=int), minlength=self.num_labels)
        return ", ".join(f"{name}: {count}" for name, count in zip(self.label_names, counts))

    def _balanced_weights(self, train_labels) -> List[float]:
        import numpy as np

        counts = np.bincount(np.asarray(train_labels, dtype=int), minlength=self.num_labels)
        if (counts == 0).any():
            missing = [n for n, c in zip(self.label_names, counts) if c == 0]
            raise FinetuneError(
                f"task.class_weights=balanced: no training row has the label(s) {missing}; "
                "give the weights as a list instead."
            )
        return (counts.sum() / (self.num_labels * counts)).tolist()  # scikit-learn's "balanced"

    def loss(self, logits, labels):
        import torch.nn.functional as F

        return F.cross_entropy(
            logits.float().view(-1, self.num_labels), labels.view(-1), weight=self._weight_tensor(logits)
        )

    def scores(self, logits):
        import scipy.special

        return scipy.special.softmax(logits.astype("float64"), axis=-1)

    def predict(self, scores):
        return scores.argmax(axis=-1)

    baseline = "the majority class"
    prototype_head = True

    def baseline_logits(self, train_labels, rows: int):
        import numpy as np

        counts = np.bincount(np.asarray(train_labels, dtype=int), minlength=self.num_labels).astype("float64")
        return np.tile(np.log(np.clip(counts / counts.sum(), 1e-12, None)), (rows, 1))

    def votes(self, scores):
        import numpy as np

        return np.eye(scores.shape[1])[self.predict(scores)]

    def from_scores(self, scores):
        import numpy as np

        # max pools each class on its own: normalised again, so they are probabilities
        return np.log(np.clip(scores / scores.sum(axis=1, keepdims=True), 1e-12, None))

    def calibrate(self, truth, logits) -> Dict[str, Any]:
        """One temperature for all classes, minimising the validation NLL (kept at 1 where no other does better)."""
        from finetune.tasks.calibration import fit_temperature, softmax_nll

        skipped = self.calibration_skipped(len(truth))
        if skipped:
            return skipped
        temperature = fit_temperature(softmax_nll, logits, truth)
        self.temperatures = [temperature] * self.num_labels
        fitted = {"method": "temperature", "fitted_on": "validation", "temperature": temperature}
        if temperature == 1.0:
            fitted["note"] = (
                "no temperature lowered the validation NLL, or the fit ran to the edge of its range "
                "(a validation split the model gets all right): T kept at 1"
            )
        return fitted

    def calibration_scores(self, truth, logits) -> Dict[str, float]:
        import numpy as np

        from finetune.tasks.calibration import scores_of, softmax_nll

        truth = np.asarray(truth, dtype=int)
        scores = self.scores(np.asarray(logits))
        one_hot = np.eye(self.num_labels)[truth]
        brier = float(((scores - one_hot) ** 2).sum(axis=1).mean()) if len(truth) else float("nan")
        return scores_of(softmax_nll(logits, truth), brier, *self.reliability_points(truth, scores))

    reliability_axis = "probability of the predicted class"

    def reliability_points(self, truth, scores):
        import numpy as np

        return scores.max(axis=1), scores.argmax(axis=1) == np.asarray(truth, dtype=int)

    def confidence(self, scores):
        return scores.max(axis=1)  # the probability of the predicted class

    def report(self, truth, logits) -> Dict[str, Any]:
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        predicted = self.predict(self.scores(logits))
        indices = list(range(self.num_labels))
        precision, recall, f1, support = precision_recall_fscore_support(
            truth, predicted, labels=indices, zero_division=0
        )
        return {
            **super().report(truth, logits),
            "per_class": {
                name: {
                    "precision": float(precision[i]),
                    "recall": float(recall[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                }
                for i, name in enumerate(self.label_names)
            },
            "confusion_matrix": {
                "labels": self.label_names,
                "rows_true_columns_predicted": confusion_matrix(truth, predicted, labels=indices).tolist(),
            },
        }

    def figure(self, report, truth, logits, title):
        from finetune.tasks.figures import confusion_figure

        return "confusion", confusion_figure(
            report["confusion_matrix"]["rows_true_columns_predicted"], self.label_names, title
        )

    def output(self, row_scores, top_k=None):
        ranked = sorted(zip(self.label_names, row_scores.tolist()), key=lambda pair: -pair[1])
        return [{LABEL: label, SCORE: score} for label, score in ranked[:top_k]]

    def prediction_cell(self, prediction, as_ids=False):
        return str(int(prediction)) if as_ids else self.label_names[int(prediction)]

    def example_columns(self, truth, scores):
        predicted = self.predict(scores)
        truth = [int(t) for t in truth]
        return {
            GOLD: [self.label_names[t] for t in truth],
            PREDICTED: [self.label_names[p] for p in predicted],
            CORRECT: (predicted == truth).tolist(),
            CONFIDENCE: self.confidence(scores).tolist(),  # the probability of the predicted class
            **{probability(name): scores[:, i].tolist() for i, name in enumerate(self.label_names)},
        }
