"""The trainer settings left unset (``null`` in conf/trainer/default.yaml), sized to the number of training rows.

Three regimes, so that 32 rows and a million rows both get a sensible run without flags:

- **few labels** (fewer than ``FEW_LABELS`` rows): batches of 8 and enough epochs for ``MIN_STEPS``
  optimizer steps; one evaluation, at the end (choosing a checkpoint on a handful of validation rows
  picks noise, and a checkpoint per epoch costs more than the training);
- **the classic fine-tune** (up to ``LARGE`` rows): batches of 32, 3 epochs, an evaluation and a
  checkpoint per epoch, the best one kept;
- **large** (more): one epoch, evaluated and saved ``EVALUATIONS_PER_EPOCH`` times.

A value the user sets wins; the run prints what was chosen and why.
"""

import logging
import math
from typing import Any, Dict, List, Tuple

from finetune.tasks.validation import FEW_LABELS  # fewer training rows: the few-label regime (and the prototype head)

log = logging.getLogger(__name__)

LARGE = 200_000  # more training rows than this: one epoch
MIN_STEPS = 100  # the few-label regime trains at least this many optimizer steps ...
MAX_EPOCHS = 30  # ... in at most this many epochs
EVALUATIONS_PER_EPOCH = 4  # large data: evaluations (and checkpoints) per epoch
LEARNING_RATE = 2e-5  # the classic fine-tune's
FEW_LABELS_LEARNING_RATE = 5e-5  # few rows, few steps: a larger one (with the prototype head, training/prototypes.py)
SIZED = (
    "learning_rate",
    "num_train_epochs",
    "per_device_train_batch_size",
    "eval_strategy",
    "save_strategy",
    "load_best_model_at_end",
)


def is_few_labels(rows: int) -> bool:
    return rows < FEW_LABELS


def sized_trainer(rows: int, evaluates: bool = False) -> Tuple[Dict[str, Any], str]:
    """The ``SIZED`` settings for ``rows`` training rows (per device), and the regime, in words.

    ``evaluates``: a callback compares evaluations (early stopping), so the few-label regime keeps one per epoch.
    """
    if is_few_labels(rows):
        steps_per_epoch = math.ceil(rows / 8)
        epochs = min(MAX_EPOCHS, max(3, math.ceil(MIN_STEPS / steps_per_epoch)))
        cadence = "epoch" if evaluates else "no"  # no checkpoint chosen on a handful of rows, unless asked
        return {
            "learning_rate": FEW_LABELS_LEARNING_RATE,
            "num_train_epochs": epochs,
            "per_device_train_batch_size": 8,
            "eval_strategy": cadence,
            "save_strategy": cadence,
            "load_best_model_at_end": evaluates,
        }, f"{rows} training rows, fewer than {FEW_LABELS}: few labels, at least {MIN_STEPS} steps"
    if rows <= LARGE:
        return {
            "learning_rate": LEARNING_RATE,
            "num_train_epochs": 3,
            "per_device_train_batch_size": 32,
            "eval_strategy": "epoch",
            "save_strategy": "epoch",
            "load_best_model_at_end": True,
        }, f"{rows} training rows: the classic fine-tune"
    steps = math.ceil(math.ceil(rows / 32) / EVALUATIONS_PER_EPOCH)
    return {
        "learning_rate": LEARNING_RATE,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 32,
        "eval_strategy": "steps",
        "save_strategy": "steps",
        "eval_steps": steps,
        "save_steps": steps,
        "load_best_model_at_end": True,
    }, f"{rows} training rows, more than {LARGE}: one epoch, evaluated {EVALUATIONS_PER_EPOCH} times"


def chosen(trainer_cfg: Any, sized: Dict[str, Any]) -> List[str]:
    """The sized settings the trainer group leaves unset (the others are the user's)."""
    return [key for key in sized if trainer_cfg.get(key) is None]


def sized_settings(cfg: Any, rows: int) -> Dict[str, Any]:
    """The trainer settings the config leaves unset (null), sized to the training rows; logged with why."""
    from finetune.config.checks import EARLY_STOPPING_TARGETS

    evaluates = any(
        node is not None and node.get("_target_") in EARLY_STOPPING_TARGETS for node in (cfg.callbacks or {}).values()
    )
    sized, why = sized_trainer(rows, evaluates)
    unset = chosen(cfg.trainer, sized)
    if unset:
        kept = [f"trainer.{k}" for k in sized if k not in unset]
        log.info(
            "Sized to the data (%s): %s; %s",
            why,
            ", ".join(
                f"trainer.{k}={sized[k]:g}" if isinstance(sized[k], float) else f"trainer.{k}={sized[k]}" for k in unset
            ),
            f"yours kept: {', '.join(kept)}" if kept else "set trainer.<key> to choose otherwise",
        )
    return {key: sized[key] for key in unset}
