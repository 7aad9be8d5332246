"""The task kinds by name (``task.problem``) and by a saved model's ``problem_type``; the metric that picks
the best model."""

from typing import Any, Dict, List, Optional, Sequence

from finetune.tasks.kind import TaskKind
from finetune.tasks.metrics import metric_errors
from finetune.tasks.multi_label import MultiLabel
from finetune.tasks.regression import Regression
from finetune.tasks.single_label import SingleLabel

KINDS = {kind.name: kind for kind in (SingleLabel, MultiLabel, Regression)}
PROBLEM_TYPES = {kind.problem_type: kind for kind in KINDS.values()}


def kind_name_for_model(config: Dict[str, Any]) -> str:
    """The kind of a model by its config (a dict).

    Its ``problem_type``, else regression for one output, else single-label.
    """
    kind = PROBLEM_TYPES.get(config.get("problem_type"))
    if kind is None:
        kind = Regression if len(config.get("id2label") or {}) == 1 else SingleLabel
    return kind.name


def kind_for_model(
    config: Dict[str, Any],
    metrics: Sequence[str] = (),
    label_separator: str = ",",
    thresholds: Optional[Dict[str, float]] = None,
) -> TaskKind:
    """The kind of a model (its config as a dict): ``problem_type``, labels, and the thresholds saved beside it."""
    id2label = config.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    kind = KINDS[kind_name_for_model(config)](names, metrics, label_separator=label_separator)
    if thresholds is not None:
        kind.thresholds = [float(thresholds[name]) for name in names]
    return kind


def kind_errors(task: Any) -> List[str]:
    """What the task's kind says of its labels, weights and metrics."""
    kind = KINDS[task.kind](task.label_names, task.metrics, _plain(task.class_weights), task.label_separator)
    return kind.config_errors() + metric_errors(kind.name, kind.metrics, best_metric(task), kind.num_labels)


def best_metric(task: Any) -> str:
    """The metric that picks the best checkpoint.

    ``task.metric_for_best_model``, else the first of the task's metrics.
    """
    if task.metric_for_best_model:
        return task.metric_for_best_model
    if task.metrics:
        return task.metrics[0]
    kind = task.kind  # a config's kind names one (null: detected by the run, single-label by default); a task
    # object's is the kind itself
    if kind is None:
        return SingleLabel.default_metrics[0]
    return (KINDS[kind] if isinstance(kind, str) else kind).default_metrics[0]


def _plain(value: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
