"""Task kinds: everything that depends on what a task's labels mean, in one place.

``task.problem`` picks one of ``KINDS``. A kind reads and checks label cells, sets up the
model's head (``num_labels``, ``problem_type``), computes the loss (with class weights),
turns logits into scores and predictions, computes the task's metrics and the per-split
report, draws that report, and shapes what the ``Predictor`` returns. The rest of the code
asks the kind and never branches on it: a new kind is one new class here.
"""

import json
import logging
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from finetune.config import FinetuneError
from finetune.metrics import compute

log = logging.getLogger(__name__)
UNLABELED_MARKERS = (-1, "-1", None)  # the hub's marker for a test split without labels (GLUE)
THRESHOLDS_FILE = "thresholds.json"  # multi-label: saved in the model folder, used by every later prediction


def _label_id(value: Any, ids: Dict[str, int]) -> Optional[int]:
    """A label given as a name, an int, or an int written as text; None if it is none of those."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        if value in ids:
            return ids[value]
        stripped = value.strip()
        if stripped.lstrip("-").isdigit():
            return int(stripped)
        return ids.get(stripped)
    return None


class TaskKind(ABC):
    """The interface every kind implements; shared plumbing lives here."""

    name = ""
    description = ""  # for the model card: "text classification ({n} classes)"
    problem_type = ""  # transformers' config.problem_type: what pipeline() and the model's own loss follow
    default_metrics: Tuple[str, ...] = ()
    stratify = False  # carve validation keeping the label mix (only where labels are classes)

    def __init__(self, label_names: Sequence[str], metrics: Sequence[str] = (), class_weights: Any = None, label_separator: str = ","):
        self.label_names = list(label_names)
        self.metrics = list(metrics) or list(self.default_metrics)
        self.class_weights_setting = class_weights
        self.separator = label_separator
        self.ids = {name: i for i, name in enumerate(self.label_names)}
        self.weights: Optional[List[float]] = None  # the loss weights in use, after fit()

    # --- labels -----------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @abstractmethod
    def parse(self, value: Any):
        """A label cell as the model trains on it, or None if the cell is not a valid label."""

    @abstractmethod
    def expected(self) -> str:
        """What a valid label cell looks like, for error messages."""

    @abstractmethod
    def label_feature(self):
        """The datasets feature the parsed labels are stored as."""

    @abstractmethod
    def describe(self, labels) -> str:
        """The labels of one split, in a few words, for the data summary."""

    def config_errors(self) -> List[str]:
        """Settings that cannot work for this kind (checked before any data is read)."""
        errors = []
        if self.num_labels < 2:
            errors.append(f"task.label_names lists {self.num_labels} name(s): a {self.name} task needs its class names, in label-id order.")
        weights = self.class_weights_setting
        if weights is not None and weights != "balanced":
            if not isinstance(weights, (list, tuple)) or len(weights) != self.num_labels:
                errors.append(f"task.class_weights must be null, 'balanced' or a list of {self.num_labels} positive numbers (one per label), got {weights!r}.")
            elif not all(isinstance(w, (int, float)) and math.isfinite(w) and w > 0 for w in weights):
                errors.append(f"task.class_weights must be positive numbers, got {list(weights)}.")
        return errors

    # --- model and loss -----------------------------------------------------------------
    def model_config(self) -> Dict[str, Any]:
        """The keyword arguments that give a pretrained encoder this task's head."""
        return {
            "num_labels": self.num_labels,
            "problem_type": self.problem_type,
            "id2label": dict(enumerate(self.label_names)),
            "label2id": dict(self.ids),
        }

    def fit(self, train_labels) -> Optional[List[float]]:
        """Set the loss weights from ``task.class_weights`` (``balanced``: from the training labels)."""
        setting = self.class_weights_setting
        if setting is None:
            self.weights = None
        elif setting == "balanced":
            self.weights = self._balanced_weights(train_labels)
        else:
            self.weights = [float(w) for w in setting]
        if self.weights is not None:
            log.info("Loss weights (task.class_weights=%s): %s", setting if setting == "balanced" else "list",
                     ", ".join(f"{n}: {w:.3g}" for n, w in zip(self.label_names, self.weights)))
        return self.weights

    @abstractmethod
    def _balanced_weights(self, train_labels) -> List[float]:
        """Loss weights from the training labels, for task.class_weights=balanced."""

    def _weight_tensor(self, like):
        import torch

        return None if self.weights is None else torch.tensor(self.weights, dtype=torch.float32, device=like.device)

    @abstractmethod
    def loss(self, logits, labels):
        """The training and evaluation loss: a mean over the batch."""

    # --- predictions and metrics ----------------------------------------------------------
    @abstractmethod
    def scores(self, logits):
        """Probabilities (classes) or values (regression) from a numpy array of logits."""

    @abstractmethod
    def predict(self, scores):
        """What the model predicts: class ids, a 0/1 matrix, or values."""

    def evaluate(self, truth, logits) -> Dict[str, float]:
        """The task's metrics (``task.metrics``) on one split."""
        return compute(self.metrics, truth, self.predict(self.scores(logits)))

    def report(self, truth, logits) -> Dict[str, Any]:
        """What metrics.json holds for a scored split: rows and metrics, plus the kind's details."""
        return {"rows": int(len(truth)), **self.evaluate(truth, logits)}

    agreement_rule = "the same prediction"

    def agreement(self, reference_logits, other_logits) -> float:
        """The share of rows on which two models predict the same (``agreement_rule``): an export against its source."""
        first, second = (self.predict(self.scores(logits)) for logits in (reference_logits, other_logits))
        same = (first == second).reshape(len(first), -1).all(axis=1)
        return float(same.mean()) if len(same) else 1.0

    def calibrate(self, truth, logits) -> None:
        """Fit what predictions depend on besides the weights, on the validation split (nothing for most kinds)."""

    def model_files(self) -> Dict[str, Any]:
        """JSON files saved beside the model that later predictions need (name -> content)."""
        return {}

    def prepare_model(self, model) -> None:
        """Adjust a freshly loaded model's head to the training labels (nothing for most kinds)."""

    @abstractmethod
    def figure(self, report: Dict[str, Any], truth, logits, title: str):
        """``(name, figure)``: the picture of a scored split, saved as ``<name>_<split>.png``."""

    @abstractmethod
    def output(self, row_scores, top_k: Optional[int] = None) -> Any:
        """What the ``Predictor`` returns for one text, given its scores."""

    @abstractmethod
    def prediction_cell(self, prediction, as_ids: bool = False) -> str:
        """One cell of a submission file (``index<TAB>prediction``)."""

    @abstractmethod
    def output_columns(self, scores) -> Dict[str, List[Any]]:
        """The columns ``finetune.predict --output`` adds to a file."""

    # --- per-example predictions and errors (predictions_<split>.parquet, misclassified_<split>.csv) ---
    @abstractmethod
    def example_columns(self, truth, scores) -> Dict[str, List[Any]]:
        """One value per row: ``gold`` and ``predicted`` (as label cells read them back), how right
        and how sure the model was, and the scores behind the prediction."""

    def gold_and_predicted(self, table) -> Tuple[Any, Any]:
        """The gold labels and predictions of a saved ``example_columns`` table, as the metrics take them."""
        import numpy as np

        return tuple(np.asarray([self.parse(cell) for cell in table[column]]) for column in ("gold", "predicted"))

    def mistakes(self, table):
        """The rows the model got wrong, most confident first: the errors most worth reading."""
        return table[~table["correct"]].sort_values("confidence", ascending=False, kind="stable")

    def confusions(self, mistakes, top: int = 5) -> List[Tuple[str, str, int]]:
        """The most frequent ``(gold, predicted, rows)`` among the mistakes."""
        counts = mistakes.groupby(["gold", "predicted"], sort=False).size().sort_values(ascending=False, kind="stable")
        return [(str(gold), str(predicted), int(n)) for (gold, predicted), n in counts.head(top).items()]


class SingleLabel(TaskKind):
    """One class per row out of ``label_names``; softmax and (weighted) cross-entropy."""

    name = "single_label"
    description = "text classification ({n} classes)"
    problem_type = "single_label_classification"
    default_metrics = ("accuracy", "f1_macro")
    stratify = True
    agreement_rule = "the same predicted class"

    def parse(self, value: Any) -> Optional[int]:
        label_id = _label_id(value, self.ids)
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
            raise FinetuneError(f"task.class_weights=balanced: no training row has the label(s) {missing}; give the weights as a list instead.")
        return (counts.sum() / (self.num_labels * counts)).tolist()  # scikit-learn's "balanced"

    def loss(self, logits, labels):
        import torch.nn.functional as F

        return F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1), weight=self._weight_tensor(logits))

    def scores(self, logits):
        import scipy.special

        return scipy.special.softmax(logits.astype("float64"), axis=-1)

    def predict(self, scores):
        return scores.argmax(axis=-1)

    def report(self, truth, logits) -> Dict[str, Any]:
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        predicted = self.predict(self.scores(logits))
        indices = list(range(self.num_labels))
        precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=indices, zero_division=0)
        return {
            **super().report(truth, logits),
            "per_class": {
                name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
                for i, name in enumerate(self.label_names)
            },
            "confusion_matrix": {"labels": self.label_names, "rows_true_columns_predicted": confusion_matrix(truth, predicted, labels=indices).tolist()},
        }

    def figure(self, report, truth, logits, title):
        from finetune.report import confusion_figure

        return "confusion", confusion_figure(report["confusion_matrix"]["rows_true_columns_predicted"], self.label_names, title)

    def output(self, row_scores, top_k=None):
        ranked = sorted(zip(self.label_names, row_scores.tolist()), key=lambda pair: -pair[1])
        return [{"label": label, "score": score} for label, score in ranked[:top_k]]

    def prediction_cell(self, prediction, as_ids=False):
        return str(int(prediction)) if as_ids else self.label_names[int(prediction)]

    def output_columns(self, scores):
        predicted = self.predict(scores)
        return {"predicted_label": [self.label_names[i] for i in predicted], "score": scores.max(axis=1).tolist()}

    def example_columns(self, truth, scores):
        predicted = self.predict(scores)
        truth = [int(t) for t in truth]
        return {
            "gold": [self.label_names[t] for t in truth],
            "predicted": [self.label_names[p] for p in predicted],
            "correct": (predicted == truth).tolist(),
            "confidence": scores.max(axis=1).tolist(),  # the probability of the predicted class
            **{f"p_{name}": scores[:, i].tolist() for i, name in enumerate(self.label_names)},
        }


class MultiLabel(TaskKind):
    """Any number of labels per row; sigmoid, binary cross-entropy, one tuned threshold per label."""

    name = "multi_label"
    description = "multi-label text classification ({n} labels, each with its own threshold in `thresholds.json`)"
    problem_type = "multi_label_classification"
    default_metrics = ("f1_micro", "f1_macro", "f1_samples", "accuracy")
    DEFAULT_THRESHOLD = 0.5
    agreement_rule = "the same set of labels above their thresholds"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.thresholds: Optional[List[float]] = None  # None: 0.5 everywhere, until tuned

    def parse(self, value: Any) -> Optional[List[float]]:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(self.separator)] if value.strip() else []
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            parts = [value]  # a single id
        hot = [0.0] * self.num_labels
        for part in parts:
            label_id = _label_id(part, self.ids)
            if label_id is None or not 0 <= label_id < self.num_labels:
                return None
            hot[label_id] = 1.0
        return hot

    def expected(self) -> str:
        return (f"not a list of task.label_names or ids 0-{self.num_labels - 1} "
                f"(a list, or one cell separated by task.label_separator={self.separator!r})")

    def label_feature(self):
        from datasets import List as ListFeature, Value

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
            raise FinetuneError(f"task.class_weights=balanced: no training row has the label(s) {missing}; give the weights as a list instead.")
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
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == self.num_labels][-1]
        with torch.no_grad():
            head.bias.copy_(torch.as_tensor(np.log(rates / (1 - rates)), dtype=head.bias.dtype))

    def loss(self, logits, labels):
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=self._weight_tensor(logits))

    def scores(self, logits):
        import scipy.special

        return scipy.special.expit(logits.astype("float64"))

    def threshold_array(self):
        import numpy as np

        return np.array(self.thresholds or [self.DEFAULT_THRESHOLD] * self.num_labels)

    def predict(self, scores):
        return (scores >= self.threshold_array()).astype(int)

    def tune_thresholds(self, truth, logits) -> List[float]:
        """Per label, the cut-off that maximises that label's F1 on ``truth`` (0.5 where it has no positives)."""
        import numpy as np

        scores, truth = self.scores(logits), np.asarray(truth).astype(int)
        thresholds = []
        for j in range(self.num_labels):
            positives = truth[:, j].sum()
            if positives == 0:
                thresholds.append(self.DEFAULT_THRESHOLD)
                continue
            order = np.argsort(-scores[:, j], kind="stable")
            hits = np.cumsum(truth[order, j])  # true positives when the top k rows are predicted
            k = np.arange(1, len(order) + 1)
            f1 = 2 * hits / (k + positives)
            best = int(np.argmax(f1))
            above, below = scores[order[best], j], scores[order[best + 1], j] if best + 1 < len(order) else 0.0
            thresholds.append(float((above + below) / 2))  # midway: the same decisions, and less brittle
        self.thresholds = thresholds
        return thresholds

    def calibrate(self, truth, logits) -> None:
        self.tune_thresholds(truth, logits)

    def model_files(self) -> Dict[str, Any]:
        thresholds = self.threshold_array().tolist()
        return {THRESHOLDS_FILE: {"thresholds": dict(zip(self.label_names, thresholds)), "tuned_on": "validation",
                                  "rule": "per label, the cut-off with the best F1 on the validation split; 0.5 where it has no positives"}}

    def evaluate(self, truth, logits):
        # During training the Trainer evaluates checkpoints on validation: score each with
        # thresholds tuned on that evaluation, as the final model will be.
        if self.thresholds is None:
            tuned = MultiLabel(self.label_names, self.metrics)
            tuned.tune_thresholds(truth, logits)
            return tuned.evaluate(truth, logits)
        return super().evaluate(truth, logits)

    def report(self, truth, logits):
        from sklearn.metrics import precision_recall_fscore_support

        scores = self.scores(logits)
        precision, recall, f1, support = precision_recall_fscore_support(truth, self.predict(scores), average=None, zero_division=0)
        fixed = (scores >= self.DEFAULT_THRESHOLD).astype(int)
        thresholds = self.threshold_array()
        return {
            **super().report(truth, logits),
            f"at_{self.DEFAULT_THRESHOLD}": compute(self.metrics, truth, fixed),  # what a fixed cut-off would give
            "per_class": {
                name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                       "support": int(support[i]), "threshold": float(thresholds[i])}
                for i, name in enumerate(self.label_names)
            },
        }

    def figure(self, report, truth, logits, title):
        from finetune.report import per_label_figure

        return "per_label", per_label_figure(report["per_class"], title)

    def output(self, row_scores, top_k=None):
        chosen = [(n, s) for n, s, t in zip(self.label_names, row_scores.tolist(), self.threshold_array()) if s >= t]
        return [{"label": n, "score": s} for n, s in sorted(chosen, key=lambda pair: -pair[1])[:top_k]]

    def prediction_cell(self, prediction, as_ids=False):
        chosen = [str(i) if as_ids else self.label_names[i] for i in range(self.num_labels) if prediction[i]]
        return self.separator.join(chosen)

    def output_columns(self, scores):
        predicted = self.predict(scores)
        return {"predicted_labels": [self.prediction_cell(row) for row in predicted],
                "score": [float(s[p.astype(bool)].max()) if p.any() else 0.0 for s, p in zip(scores, predicted)]}

    def example_columns(self, truth, scores):
        import numpy as np

        truth, predicted = np.asarray(truth).astype(int), self.predict(scores)
        # how sure each label's decision was: the score for a label given, 1 - score for one left out
        certainty = np.where(predicted == 1, scores, 1 - scores)
        wrong = predicted != truth
        return {
            "gold": [self.prediction_cell(row) for row in truth],
            "predicted": [self.prediction_cell(row) for row in predicted],
            "correct": (~wrong.any(axis=1)).tolist(),  # every label of the row right, as accuracy counts
            # a wrong row: its most confident wrong decision; a right one: its least sure decision
            "confidence": np.where(wrong.any(axis=1), np.where(wrong, certainty, 0).max(axis=1), certainty.min(axis=1)).tolist(),
            **{f"score_{name}": scores[:, i].tolist() for i, name in enumerate(self.label_names)},
        }


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
            errors.append(f"task.label_names: a regression task predicts one score; give at most one name (got {self.label_names}).")
        if self.class_weights_setting is not None:
            errors.append("task.class_weights: a regression task has no classes to weight; set task.class_weights=null.")
        return errors

    def _balanced_weights(self, train_labels) -> List[float]:
        raise FinetuneError("task.class_weights: a regression task has no classes to weight; set task.class_weights=null.")

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
        assert logits.shape == (labels.shape[0], 1), f"regression logits {tuple(logits.shape)} for labels {tuple(labels.shape)}"
        return F.mse_loss(logits.float().squeeze(-1), labels.float())

    def scores(self, logits):
        import numpy as np

        logits = np.asarray(logits, dtype="float64")
        assert logits.ndim == 2 and logits.shape[1] == 1, f"regression logits of shape {logits.shape}, expected (N, 1)"
        return logits[:, 0]

    def predict(self, scores):
        return scores

    def figure(self, report, truth, logits, title):
        from finetune.report import scatter_figure

        return "scatter", scatter_figure(truth, self.scores(logits), title)

    def output(self, row_scores, top_k=None):
        return {"score": float(row_scores)}

    def prediction_cell(self, prediction, as_ids=False):
        return f"{float(prediction):.3f}"

    def output_columns(self, scores):
        return {"predicted_score": scores.tolist()}

    def example_columns(self, truth, scores):
        import numpy as np

        truth = np.asarray(truth, dtype=float)
        return {"gold": truth.tolist(), "predicted": scores.tolist(), "error": (scores - truth).tolist()}

    def mistakes(self, table):
        """Every row, largest error first: a score is never simply right or wrong."""
        return table.iloc[table["error"].abs().argsort(kind="stable")[::-1]]

    def confusions(self, mistakes, top=5):
        return []  # no classes to confuse


KINDS = {kind.name: kind for kind in (SingleLabel, MultiLabel, Regression)}
PROBLEM_TYPES = {kind.problem_type: kind for kind in KINDS.values()}


def kind_for_model(config: Dict[str, Any], model_dir: Optional[Path] = None, metrics: Sequence[str] = (), label_separator: str = ",") -> TaskKind:
    """The kind of a model (its config as a dict): ``problem_type``, labels, and the thresholds saved beside it."""
    id2label = config.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    kind_class = PROBLEM_TYPES.get(config.get("problem_type")) or (Regression if len(names) == 1 else SingleLabel)
    kind = kind_class(names, metrics, label_separator=label_separator)
    thresholds = model_dir / THRESHOLDS_FILE if model_dir else None
    if thresholds is not None and thresholds.is_file():
        saved = json.loads(thresholds.read_text(encoding="utf-8"))["thresholds"]
        kind.thresholds = [float(saved[name]) for name in names]
    return kind
