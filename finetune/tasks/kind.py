"""Task kinds: everything that depends on what a task's labels mean, in one place.

``task.kind`` picks one of ``KINDS`` (finetune/tasks/registry.py). A kind reads and checks label cells, sets up the
model's head (``num_labels``, ``problem_type``), computes the loss (with class weights),
turns logits into scores and predictions, computes the task's metrics and the per-split
report, draws that report, and shapes what the ``Predictor`` returns. The rest of the code
asks the kind and never branches on it: a new kind is one new class, in a file of its own.
"""

import logging
import math
from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Sequence, Tuple

from finetune.tasks.metrics import compute
from finetune.tasks.vocabulary import CONFIDENCE, CORRECT, GOLD, PREDICTED

log = logging.getLogger(__name__)
UNLABELED_MARKERS = (-1, "-1", None)  # the hub's marker for a test split without labels (GLUE)
# task.calibration=auto fits temperatures on this many validation rows or more: on fewer, the fit is noise (a
# temperature fitted on 30 rows can make a model's answers more confident and less calibrated)
MIN_CALIBRATION_ROWS = 100


def label_index(value: Any, ids: Dict[str, int]) -> Optional[int]:
    """A label given as a name, an int, or an int written as text; None if it is none of those.

    A whole number that is a label's name (labels 1, 2, 10 read from a file) is that label; else it is the id.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return ids.get(str(value), value)
    if isinstance(value, str):
        if value in ids:
            return ids[value]
        stripped = value.strip()
        if stripped.lstrip("-").isdigit():
            return ids.get(str(int(stripped)), int(stripped))
        return ids.get(stripped)
    return None


class TaskKind(ABC):
    """The interface every kind implements; shared plumbing lives here."""

    name = ""
    description = ""  # for the model card: "text classification ({n} classes)"
    problem_type = ""  # transformers' config.problem_type: what pipeline() and the model's own loss follow
    default_metrics: Tuple[str, ...] = ()
    stratify = False  # carve validation keeping the label mix (only where labels are classes)

    def __init__(
        self,
        label_names: Sequence[str],
        metrics: Sequence[str] = (),
        class_weights: Any = None,
        label_separator: str = ",",
        calibration: str = "temperature",
    ):
        self.label_names = list(label_names)
        self.calibration = calibration  # task.calibration: auto | temperature | none
        self.temperatures: Optional[List[float]] = None  # one per output, after calibrate(); None: logits as they are
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
            errors.append(
                f"task.label_names lists {self.num_labels} name(s): "
                f"a {self.name} task needs its class names, in label-id order."
            )
        weights = self.class_weights_setting
        if weights is not None and weights != "balanced":
            if not isinstance(weights, (list, tuple)) or len(weights) != self.num_labels:
                errors.append(
                    "task.class_weights must be null, 'balanced' or "
                    f"a list of {self.num_labels} positive numbers (one per label), got {weights!r}."
                )
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
            log.info(
                "Loss weights (task.class_weights=%s): %s",
                setting if setting == "balanced" else "list",
                ", ".join(f"{n}: {w:.3g}" for n, w in zip(self.label_names, self.weights)),
            )
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

    baseline = ""  # the trivial baseline, in words: what a model that read no text predicts
    prototype_head = False  # whether a head can start from class means (model.head=prototypes)

    @abstractmethod
    def baseline_logits(self, train_labels, rows: int):
        """``rows`` rows of the baseline's logits: the same for every row, from the training labels alone."""

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

    # --- long texts: a document's windows, aggregated (finetune/tasks/windows.py) -------------
    def aggregate(self, logits, documents, how: str = "mean"):
        """One row of logits per document, in document order, from the rows of its windows.

        ``mean`` or ``max`` of the windows' scores, or ``vote``: the share of windows predicting each
        class or label; the result is given back as logits (``from_scores``). Documents of one window
        each keep their logits unchanged, so short texts score exactly as without windows.
        """
        import numpy as np

        documents = np.asarray(documents)
        ids, first, inverse = np.unique(documents, return_index=True, return_inverse=True)
        if len(ids) == len(documents):
            return logits[first]
        scores = self.votes(self.scores(logits)) if how == "vote" else self.scores(logits)
        scores = scores.reshape(len(documents), -1)
        if how == "max":
            pooled = np.full((len(ids), scores.shape[1]), -np.inf)
            np.maximum.at(pooled, inverse, scores)
        else:
            pooled = np.zeros((len(ids), scores.shape[1]))
            np.add.at(pooled, inverse, scores)
            pooled /= np.bincount(inverse)[:, None]
        return self.from_scores(pooled).astype(logits.dtype).reshape(len(ids), *logits.shape[1:])

    def votes(self, scores):
        """Each window's prediction as scores to average (one-hot for classes)."""
        return self.predict(scores).astype(float)

    def from_scores(self, scores):
        """Logits whose scores are ``scores`` (the inverse of ``scores``); regression: the scores themselves."""
        return scores

    # --- calibration (fitted on validation after training; finetune/tasks/calibration.py) ---------
    def calibrate(self, truth, logits) -> Dict[str, Any]:
        """Fit on the validation split what predictions depend on besides the weights (temperatures,
        thresholds); what was fitted, for metrics.json. Nothing for a kind without probabilities."""
        return {"method": "none"}

    def calibrated(self, logits):
        """The logits divided by the fitted temperatures: what the model outputs once they are folded into its head."""
        import numpy as np

        if self.temperatures is None:
            return logits
        return np.asarray(logits, dtype="float64") / np.asarray(self.temperatures)

    def same_decisions(self, raw_logits, calibrated_logits) -> bool:
        """Whether the temperatures left every decision as it was (the most probable class)."""
        import numpy as np

        return bool(np.array_equal(np.argmax(raw_logits, axis=-1), np.argmax(calibrated_logits, axis=-1)))

    def calibration_skipped(self, rows: int) -> Optional[Dict[str, Any]]:
        """What ``calibrate`` reports where it fits no temperature (``task.calibration``, ``rows`` of validation);
        None where it fits them."""
        if self.calibration == "none":
            return {"method": "none", "note": "task.calibration=none"}
        if self.calibration == "auto" and rows < MIN_CALIBRATION_ROWS:
            return {
                "method": "none",
                "note": f"not fitted: {rows} validation rows are too few for a temperature that holds "
                f"(task.calibration=auto fits one on {MIN_CALIBRATION_ROWS} rows or more)",
            }
        return None

    def calibration_scores(self, truth, logits) -> Optional[Dict[str, float]]:
        """ECE, NLL and Brier score of one split's logits; None where the outputs are no probabilities."""
        return None

    def calibration_report(self, truth, raw_logits) -> Optional[Dict[str, Any]]:
        """The calibration measures before and after the temperatures, for metrics.json."""
        from finetune.tasks.calibration import BINNING, BINS

        before = self.calibration_scores(truth, raw_logits)
        if before is None:
            return None
        return {
            "binning": f"{BINS} {BINNING} bins",
            "before": before,
            "after": self.calibration_scores(truth, self.calibrated(raw_logits)),
        }

    def confidence(self, scores):
        """How sure the model is of each row's prediction (abstention, risk-coverage).

        None for a kind without probabilities.
        """
        return None

    def confidence_and_right(self, truth, logits):
        """Per row: how sure the model is, and whether it is right (as accuracy counts); None without probabilities."""
        import numpy as np

        scores = self.scores(logits)
        confidence = self.confidence(scores)
        if confidence is None:
            return None
        return confidence, (np.asarray(self.predict(scores)) == np.asarray(truth).astype(int)).reshape(
            len(scores), -1
        ).all(axis=1)

    def risk_coverage(self, truth, logits) -> Optional[List[Dict[str, Any]]]:
        """Accuracy on the rows answered when only the surest 100/90/80/70/50% are (finetune/tasks/calibration.py)."""
        from finetune.tasks.calibration import risk_coverage

        answered = self.confidence_and_right(truth, logits)
        return None if answered is None else risk_coverage(*answered)

    def calibration_figures(self, truth, raw_logits, logits, title: str) -> List[Tuple[str, Any]]:
        """``(name, figure)`` pairs: the reliability diagram (before and after the temperatures) and the
        risk-coverage curve."""
        from finetune.tasks.figures import reliability_figure, risk_coverage_figure

        answered = self.confidence_and_right(truth, logits)
        if answered is None:
            return []
        curves = {
            when: self.reliability_points(truth, self.scores(z))
            for when, z in (("before", raw_logits), ("after", logits))
        }
        return [
            ("reliability", reliability_figure(curves, self.reliability_axis, title)),
            ("risk_coverage", risk_coverage_figure(*answered, title)),
        ]

    reliability_axis = "probability"

    def reliability_points(self, truth, scores):
        """``(probability, outcome)`` pairs that calibration is measured on (calibration_scores' ECE)."""
        raise NotImplementedError(f"a {self.name} task has no probabilities")

    def head(self, model):
        """The model's last layer: the last linear layer with one output per label."""
        import torch

        return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == self.num_labels][-1]

    def fold_temperatures(self, model) -> None:
        """Divide the last layer's weights and bias by the temperatures, so that the model itself (and every
        consumer: Predictor, pipeline(), ONNX) gives calibrated probabilities. calibration.json keeps T:
        multiplying back recovers the layer as trained."""
        import torch

        if self.temperatures is None or all(t == 1.0 for t in self.temperatures):
            return
        layer = self.head(model)
        with torch.no_grad():
            divisor = torch.as_tensor(self.temperatures, dtype=layer.weight.dtype, device=layer.weight.device)
            layer.weight.div_(divisor[:, None])
            if layer.bias is not None:
                layer.bias.div_(divisor)

    def thresholds_by_label(self) -> Optional[Dict[str, float]]:
        """The cut-off of each label where answers are labels above thresholds (multi-label); None elsewhere."""
        return None

    def model_files(self) -> Dict[str, Any]:
        """What later predictions need besides the weights, saved beside the model.

        finetune/runs/saved.py names the files.
        """
        if self.temperatures is None:
            return {}
        return {
            "calibration": {
                "method": "temperature",
                "fitted_on": "validation",
                "folded_into_last_layer": True,
                "temperatures": dict(zip(self.label_names, self.temperatures)),
                "uncalibrated_layer": "multiply row j of the last layer's weight and bias element j by temperatures[j]",
            }
        }

    def prepare_model(self, model) -> None:  # noqa: B027 -- an optional hook: most kinds leave the model as it is
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

    def output_columns(self, scores) -> Dict[str, List[Any]]:
        """The columns ``finetune.predict --output`` adds: ``predicted`` (a label cell) and ``confidence``."""
        columns: Dict[str, List[Any]] = {PREDICTED: [self.prediction_cell(p) for p in self.predict(scores)]}
        confidence = self.confidence(scores)
        return columns if confidence is None else {**columns, CONFIDENCE: confidence.tolist()}

    # --- per-example predictions and errors (predictions_<split>.parquet, misclassified_<split>.csv) ---
    @abstractmethod
    def example_columns(self, truth, scores) -> Dict[str, List[Any]]:
        """One value per row: ``gold`` and ``predicted`` (as label cells read them back), how right
        and how sure the model was, and the scores behind the prediction."""

    def gold_and_predicted(self, table) -> Tuple[Any, Any]:
        """The gold labels and predictions of a saved ``example_columns`` table, as the metrics take them."""
        import numpy as np

        return tuple(np.asarray([self.parse(cell) for cell in table[column]]) for column in (GOLD, PREDICTED))

    def mistakes(self, table):
        """The rows the model got wrong, most confident first: the errors most worth reading."""
        return table[~table[CORRECT]].sort_values(CONFIDENCE, ascending=False, kind="stable")

    def confusions(self, mistakes, top: int = 5) -> List[Tuple[str, str, int]]:
        """The most frequent ``(gold, predicted, rows)`` among the mistakes."""
        counts = mistakes.groupby([GOLD, PREDICTED], sort=False).size().sort_values(ascending=False, kind="stable")
        return [(str(gold), str(predicted), int(n)) for (gold, predicted), n in counts.head(top).items()]
