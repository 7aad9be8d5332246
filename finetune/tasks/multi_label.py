"""Multi-label classification: any number of classes per text, a sigmoid and a threshold per label."""

import logging
from typing import Any, Dict, List, Optional

from finetune.errors import FinetuneError
from finetune.tasks.kind import TaskKind, label_index
from finetune.tasks.metrics import compute
from finetune.tasks.vocabulary import CONFIDENCE, CORRECT, GOLD, LABEL, PREDICTED, SCORE, probability

log = logging.getLogger(__name__)


class MultiLabel(TaskKind):
    """Any number of labels per row; sigmoid, binary cross-entropy, one tuned threshold per label."""

    name = "multi_label"
    description = "multi-label text classification ({n} labels, each with its own threshold, saved with the model)"
    problem_type = "multi_label_classification"
    default_metrics = ("f1_micro", "f1_macro", "f1_samples", "accuracy")
    DEFAULT_THRESHOLD = 0.5
    MIN_POSITIVES = 30  # validation positives a label needs for a threshold (and temperature) of its own
    SHARED_GRID = (0.05, 0.951, 0.01)  # the cut-offs the shared threshold is chosen from
    agreement_rule = "the same set of labels above their thresholds"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.thresholds: Optional[List[float]] = None  # None: 0.5 everywhere, until tuned
        self.shared: Optional[float] = None  # the threshold of the labels with too few validation positives

    def parse(self, value: Any) -> Optional[List[float]]:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(self.separator)] if value.strip() else []
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            parts = [value]  # a single id
        hot = [0.0] * self.num_labels
        for part in parts:
            label_id = label_index(part, self.ids)
            if label_id is None or not 0 <= label_id < self.num_labels:
                return None
            hot[label_id] = 1.0
        return hot

    def expected(self) -> str:
        return (
            f"not a list of task.label_names or ids 0-{self.num_labels - 1} "
            f"(a list, or one cell separated by task.label_separator={self.separator!r})"
        )

    def label_feature(self):
        from datasets import List as ListFeature
        from datasets import Value

        return ListFeature(Value("float32"), length=self.num_labels)

    def describe(self, labels) -> str:
        import numpy as np

        matrix = np.asarray(labels)
        counts = matrix.sum(axis=0).astype(int)
        order = np.argsort(-counts, kind="stable")
        common = ", ".join(f"{self.label_names[i]}: {counts[i]}" for i in order[:3])
        rare = ", ".join(f"{self.label_names[i]}: {counts[i]}" for i in order[-3:][::-1])
        return f"{matrix.sum(axis=1).mean():.2f} labels/row; most {common}; fewest {rare}"

    def _balanced_weights(self, train_labels) -> List[float]:
        import numpy as np

        matrix = np.asarray(train_labels)
        positives = matrix.sum(axis=0)
        if (positives == 0).any():
            missing = [n for n, c in zip(self.label_names, positives) if c == 0]
            raise FinetuneError(
                f"task.class_weights=balanced: no training row has the label(s) {missing}; "
                "give the weights as a list instead."
            )
        return ((len(matrix) - positives) / positives).tolist()  # BCE's pos_weight: negatives per positive

    def fit(self, train_labels) -> Optional[List[float]]:
        import numpy as np

        self.label_rates = np.asarray(train_labels).mean(axis=0)  # the share of rows with each label
        return super().fit(train_labels)

    def prepare_model(self, model) -> None:
        # A fresh head says 0.5 for every label, while most labels are rare (GoEmotions: 4% of
        # rows on average). Its first, large gradients then push every text's representation to
        # one point that scores all labels low: MiniLM, 2 epochs on 10,000 GoEmotions rows, gave
        # the same scores for every text. Starting each label's bias at its log-odds in the
        # training data leaves the encoder to learn what differs between texts.
        import numpy as np
        import torch

        rates = np.clip(self.label_rates, 1e-4, 1 - 1e-4)
        head = self.head(model)
        with torch.no_grad():
            head.bias.copy_(torch.as_tensor(np.log(rates / (1 - rates)), dtype=head.bias.dtype))

    def loss(self, logits, labels):
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(
            logits.float(), labels.float(), pos_weight=self._weight_tensor(logits)
        )

    def scores(self, logits):
        import scipy.special

        return scipy.special.expit(logits.astype("float64"))

    def votes(self, scores):
        return (scores >= 0.5).astype(float)  # a window's vote at 0.5: thresholds are tuned on the documents' scores

    def from_scores(self, scores):
        import scipy.special

        return scipy.special.logit(scores.clip(1e-12, 1 - 1e-12))

    def threshold_array(self):
        import numpy as np

        return np.array(self.thresholds or [self.DEFAULT_THRESHOLD] * self.num_labels)

    def predict(self, scores):
        return (scores >= self.threshold_array()).astype(int)

    baseline = "each label's training share"

    def baseline_logits(self, train_labels, rows: int):
        import numpy as np

        share = np.clip(np.asarray(train_labels, dtype="float64").mean(axis=0), 1e-6, 1 - 1e-6)
        return np.tile(np.log(share / (1 - share)), (rows, 1))

    def tune_thresholds(self, truth, logits) -> List[float]:
        """Thresholds that hold on new rows: a label with at least ``MIN_POSITIVES`` positives in ``truth``
        gets the cut-off with its best F1; every other label shares the one cut-off (0.05 to 0.95) with the
        best micro-F1 over all labels, instead of chasing its handful of positives."""
        import numpy as np

        scores, truth = self.scores(logits), np.asarray(truth).astype(int)
        positives = truth.sum(axis=0)
        shared = self.shared_threshold(scores, truth)
        self.thresholds = [
            self.own_threshold(scores[:, j], truth[:, j]) if positives[j] >= self.MIN_POSITIVES else shared
            for j in range(self.num_labels)
        ]
        self.shared = shared
        return self.thresholds

    @staticmethod
    def own_threshold(scores, truth) -> float:
        """The cut-off with the best F1 for one label: midway between the last row predicted and the next."""
        import numpy as np

        order = np.argsort(-scores, kind="stable")
        hits = np.cumsum(truth[order])  # true positives when the top k rows are predicted
        f1 = 2 * hits / (np.arange(1, len(order) + 1) + truth.sum())
        best = int(np.argmax(f1))
        above, below = scores[order[best]], scores[order[best + 1]] if best + 1 < len(order) else 0.0
        return float((above + below) / 2)  # midway: the same decisions, and less brittle

    @classmethod
    def shared_threshold(cls, scores, truth) -> float:
        """The one cut-off of ``SHARED_GRID`` with the best micro-F1 over every label (0.5 without positives)."""
        import numpy as np

        if truth.sum() == 0:
            return cls.DEFAULT_THRESHOLD
        grid = np.round(np.arange(*cls.SHARED_GRID), 2)
        f1 = [2 * (truth & (scores >= t)).sum() / ((scores >= t).sum() + truth.sum()) for t in grid]
        return float(grid[int(np.argmax(f1))])

    def calibrate(self, truth, logits) -> Dict[str, Any]:
        """Temperatures (one per label with ``MIN_POSITIVES`` validation positives, one shared by the others),
        then thresholds on the calibrated scores."""
        fitted = self.calibration_skipped(len(truth)) or self.fit_temperatures(truth, logits)
        self.tune_thresholds(truth, self.calibrated(logits))
        return {
            **fitted,
            "thresholds": {
                "min_positives_for_own": self.MIN_POSITIVES,
                "shared": self.shared,
                "own": int(sum(t != self.shared for t in self.thresholds)),
            },
        }

    def fit_temperatures(self, truth, logits) -> Dict[str, Any]:
        import numpy as np

        from finetune.tasks.calibration import fit_temperature, sigmoid_nll

        truth, logits = np.asarray(truth).astype(int), np.asarray(logits, dtype="float64")
        shared = fit_temperature(sigmoid_nll, logits, truth)
        self.temperatures = [
            fit_temperature(sigmoid_nll, logits[:, j], truth[:, j])
            if truth[:, j].sum() >= self.MIN_POSITIVES
            else shared
            for j in range(self.num_labels)
        ]
        # T = 1 where no temperature lowered the label's validation NLL
        # (or every decision was right: see fit_temperature)
        return {
            "method": "temperature",
            "fitted_on": "validation",
            "shared_temperature": shared,
            "temperatures": dict(zip(self.label_names, self.temperatures)),
            "kept_at_1": [name for name, t in zip(self.label_names, self.temperatures) if t == 1.0],
        }

    def same_decisions(self, raw_logits, calibrated_logits) -> bool:
        import numpy as np

        return bool(
            np.array_equal(np.asarray(raw_logits) >= 0, np.asarray(calibrated_logits) >= 0)
        )  # each label at 0.5

    def calibration_scores(self, truth, logits) -> Dict[str, float]:
        import numpy as np

        from finetune.tasks.calibration import scores_of, sigmoid_nll

        truth = np.asarray(truth).astype(int)
        scores = self.scores(np.asarray(logits))
        return scores_of(
            sigmoid_nll(logits, truth), float(((scores - truth) ** 2).mean()), *self.reliability_points(truth, scores)
        )

    reliability_axis = "score of each label, every row"

    def reliability_points(self, truth, scores):
        import numpy as np

        return scores, np.asarray(truth).astype(int)

    def confidence(self, scores):
        import numpy as np

        # each label's decision: the score for a label given, 1 - score for one left out;
        # a row is as sure as its least sure decision
        return np.where(self.predict(scores) == 1, scores, 1 - scores).min(axis=1)

    def thresholds_by_label(self) -> Optional[Dict[str, float]]:
        return dict(zip(self.label_names, self.threshold_array().tolist()))

    def model_files(self) -> Dict[str, Any]:
        thresholds = self.threshold_array().tolist()
        rule = (
            f"per label with at least {self.MIN_POSITIVES} positives in validation, the cut-off with its best F1; "
            "every other label, the one cut-off with the best micro-F1 over all labels"
        )
        return {
            **super().model_files(),
            "thresholds": {
                "thresholds": dict(zip(self.label_names, thresholds)),
                "tuned_on": "validation",
                "rule": rule,
            },
        }

    def evaluate(self, truth, logits):
        # During training the Trainer evaluates checkpoints on validation: score each with
        # thresholds tuned on that evaluation, as the final model will be.
        if self.thresholds is None:
            tuned = MultiLabel(self.label_names, self.metrics, calibration="none")
            tuned.tune_thresholds(truth, logits)
            return tuned.evaluate(truth, logits)
        return super().evaluate(truth, logits)

    def report(self, truth, logits):
        from sklearn.metrics import precision_recall_fscore_support

        scores = self.scores(logits)
        precision, recall, f1, support = precision_recall_fscore_support(
            truth, self.predict(scores), average=None, zero_division=0
        )
        fixed = (scores >= self.DEFAULT_THRESHOLD).astype(int)
        thresholds = self.threshold_array()
        return {
            **super().report(truth, logits),
            f"at_{self.DEFAULT_THRESHOLD}": compute(self.metrics, truth, fixed),  # what a fixed cut-off would give
            "per_class": {
                name: {
                    "precision": float(precision[i]),
                    "recall": float(recall[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                    "threshold": float(thresholds[i]),
                }
                for i, name in enumerate(self.label_names)
            },
        }

    def figure(self, report, truth, logits, title):
        from finetune.tasks.figures import per_label_figure

        return "per_label", per_label_figure(report["per_class"], title)

    def output(self, row_scores, top_k=None):
        chosen = [(n, s) for n, s, t in zip(self.label_names, row_scores.tolist(), self.threshold_array()) if s >= t]
        return [{LABEL: n, SCORE: s} for n, s in sorted(chosen, key=lambda pair: -pair[1])[:top_k]]

    def prediction_cell(self, prediction, as_ids=False):
        chosen = [str(i) if as_ids else self.label_names[i] for i in range(self.num_labels) if prediction[i]]
        return self.separator.join(chosen)

    def example_columns(self, truth, scores):
        import numpy as np

        truth, predicted = np.asarray(truth).astype(int), self.predict(scores)
        # how sure each label's decision was: the score for a label given, 1 - score for one left out
        certainty = np.where(predicted == 1, scores, 1 - scores)
        wrong = predicted != truth
        return {
            GOLD: [self.prediction_cell(row) for row in truth],
            PREDICTED: [self.prediction_cell(row) for row in predicted],
            CORRECT: (~wrong.any(axis=1)).tolist(),  # every label of the row right, as accuracy counts
            # a wrong row: its most confident wrong decision; a right one: its least sure decision
            CONFIDENCE: np.where(
                wrong.any(axis=1), np.where(wrong, certainty, 0).max(axis=1), certainty.min(axis=1)
            ).tolist(),
            **{probability(name): scores[:, i].tolist() for i, name in enumerate(self.label_names)},
        }
