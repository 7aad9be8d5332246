"""The allowed range of every numeric and choice setting a run uses, checked before any work starts.

One rule per key: the check, the allowed range in words, and a good value. ``config.validate``
adds the messages to its own, so every bad value is named at once, in one line each. Like
``config``, this imports nothing heavy. The ``trainer`` group has no typed schema, so a string
where a number goes (``trainer.learning_rate=abc``) is caught here too; Hydra types the others.
"""

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

Check = Callable[[Any], bool]


@dataclass(frozen=True)
class Rule:
    check: Check  # True when the value is allowed
    allowed: str  # the allowed range, in words
    example: str  # a good value, as written on the command line
    needs: Optional[Callable[[Any, DictConfig], bool]] = None  # a further condition, on the other settings too


def _is_number(value: Any) -> bool:
    # bool is an int to Python, but trainer.learning_rate=true is a mistake; NaN and infinity are no setting either
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value: Any) -> bool:
    """An integer, or a float without a fraction (a typed float field holds 2000 as 2000.0)."""
    return _is_number(value) and float(value).is_integer()


def integer(low: int, below: Optional[int] = None) -> Check:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low and (below is None or v < below)


def number(above: Optional[float] = None, at_least: Optional[float] = None, below: Optional[float] = None) -> Check:
    return lambda v: (
        _is_number(v)
        and (above is None or v > above)
        and (at_least is None or v >= at_least)
        and (below is None or v < below)
    )


def fraction_or_count(zero: bool = False) -> Check:
    """A fraction below 1 (of the rows or steps), or a whole number >= 1; ``zero`` allows 0 too."""
    return lambda v: _is_number(v) and ((0 <= v < 1 if zero else 0 < v < 1) or (v >= 1 and _is_whole(v)))


def optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def one_of(*choices: str) -> Check:
    return lambda v: isinstance(v, str) and v in choices


def _trains_a_step(epochs: Any, cfg: DictConfig) -> bool:
    """A run must train at least one step: epochs > 0, unless trainer.max_steps >= 1 takes their place."""
    return epochs is None or epochs > 0 or integer(1)(OmegaConf.select(cfg, "trainer.max_steps", default=-1))


SEED = Rule(integer(0, below=2**32), "an integer in [0, 2**32)", "42")  # numpy's seeds are 32-bit
BATCH = "an integer >= 1"
STEPS = "a fraction in (0, 1) of all steps, or a whole number of steps >= 1"
STRATEGIES = ("no", "steps", "epoch")

RULES: Dict[str, Rule] = {
    "seed": SEED,
    "task.max_length": Rule(integer(1), "an integer >= 1 (tokens per text)", "128"),
    "task.validation_size": Rule(
        optional(fraction_or_count()),
        "null (a tenth, at most 2000 rows), a fraction in (0, 1) of the train rows, or a whole number of rows >= 1",
        "0.1",
    ),
    "task.max_train_samples": Rule(optional(integer(1)), "null (all rows) or an integer >= 1", "1000"),
    "task.max_eval_samples": Rule(optional(integer(1)), "null (all rows) or an integer >= 1", "1000"),
    "task.max_test_samples": Rule(optional(integer(1)), "null (all rows) or an integer >= 1", "1000"),
    "trainer.per_device_train_batch_size": Rule(optional(integer(1)), "null (sized to the data) or " + BATCH, "32"),
    "trainer.per_device_eval_batch_size": Rule(integer(1), BATCH, "64"),
    "trainer.gradient_accumulation_steps": Rule(integer(1), BATCH, "1"),
    "trainer.learning_rate": Rule(optional(number(above=0)), "null (sized to the data) or a number > 0", "2e-5"),
    "trainer.num_train_epochs": Rule(
        optional(number(at_least=0)),
        "null (sized to the data) or a number > 0 (0 only with trainer.max_steps >= 1)",
        "3",
        needs=_trains_a_step,
    ),
    "trainer.max_steps": Rule(
        lambda v: v == -1 or integer(1)(v), "an integer >= 1, or -1 to train for trainer.num_train_epochs", "1000"
    ),
    "trainer.warmup_steps": Rule(
        fraction_or_count(zero=True), "a fraction in [0, 1) of all steps, or a whole number of steps >= 1", "0.1"
    ),
    "trainer.weight_decay": Rule(number(at_least=0), "a number >= 0", "0.01"),
    "trainer.max_grad_norm": Rule(optional(number(at_least=0)), "a number >= 0 (0: no clipping)", "1.0"),
    "trainer.adam_beta1": Rule(number(at_least=0, below=1), "a number in [0, 1)", "0.9"),
    "trainer.adam_beta2": Rule(number(at_least=0, below=1), "a number in [0, 1)", "0.999"),
    "trainer.adam_epsilon": Rule(number(above=0), "a number > 0", "1e-8"),
    "trainer.label_smoothing_factor": Rule(number(at_least=0, below=1), "a number in [0, 1)", "0.1"),
    "trainer.eval_strategy": Rule(
        optional(one_of(*STRATEGIES)), "null (sized to the data) or one of " + ", ".join(STRATEGIES), "epoch"
    ),
    "trainer.save_strategy": Rule(
        optional(one_of(*STRATEGIES, "best")),
        "null (sized to the data) or one of " + ", ".join((*STRATEGIES, "best")),
        "epoch",
    ),
    "trainer.logging_strategy": Rule(one_of(*STRATEGIES), "one of " + ", ".join(STRATEGIES), "steps"),
    "trainer.eval_steps": Rule(optional(fraction_or_count()), "null (= logging_steps) or " + STEPS, "500"),
    "trainer.save_steps": Rule(fraction_or_count(), STEPS, "500"),
    "trainer.logging_steps": Rule(fraction_or_count(), STEPS, "10"),
    "trainer.save_total_limit": Rule(optional(integer(1)), "null (keep every checkpoint) or an integer >= 1", "2"),
    "trainer.seed": SEED,
    "trainer.data_seed": Rule(optional(SEED.check), "null (= trainer.seed) or " + SEED.allowed, "42"),
    "trainer.dataloader_num_workers": Rule(integer(0), "an integer >= 0 (0: load in the main process)", "4"),
    "hardware.dataloader_num_workers": Rule(integer(0), "an integer >= 0 (0: load in the main process)", "4"),
    "hardware.num_proc": Rule(optional(integer(1)), "null (automatic) or an integer >= 1", "4"),
    "trainer.eval_accumulation_steps": Rule(
        optional(integer(1)), "null (keep every prediction on the device) or an integer >= 1", "8"
    ),
    "model.contrastive_pairs": Rule(
        lambda v: integer(0)(v) and v != 1, "0 (no contrastive stage) or an integer >= 2 (half of each sort)", "320"
    ),
    "peft.r": Rule(optional(integer(1)), "an integer >= 1", "8"),
    "peft.lora_alpha": Rule(optional(number(above=0)), "a number > 0", "16"),
    "peft.learning_rate": Rule(optional(number(above=0)), "null (the trainer's) or a number > 0", "2e-3"),
    "peft.lora_dropout": Rule(optional(number(at_least=0, below=1)), "a number in [0, 1)", "0.1"),
    "callbacks.early_stopping.early_stopping_patience": Rule(
        integer(1), "an integer >= 1 (evaluations without improvement)", "3"
    ),
    "callbacks.early_stopping.early_stopping_threshold": Rule(
        number(at_least=0), "a number >= 0 (the least change that counts as improvement)", "0.001"
    ),
    "hardware.pad_to_multiple_of": Rule(
        optional(integer(1)), "null (automatic) or an integer >= 1 (1: to the longest row)", "8"
    ),
}

_ABSENT = object()
_REFERENCE = re.compile(r"^\$\{([\w.]+)\}$")  # ${seed}: a plain reference to another key


def range_errors(cfg: DictConfig) -> List[str]:
    """One message per setting outside its allowed range, naming the key, the value, the range and a good value."""
    errors = []
    for key, rule in RULES.items():
        if _refers_to_a_checked_key(cfg, key):
            continue
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT)
        except Exception:  # an interpolation that does not resolve: reported where it is used
            continue
        if value is not _ABSENT and not (rule.check(value) and (rule.needs is None or rule.needs(value, cfg))):
            errors.append(f"{key}={value!r}: must be {rule.allowed}, e.g. {key}={rule.example}.")
    return errors


def _refers_to_a_checked_key(cfg: DictConfig, key: str) -> bool:
    """``trainer.seed: ${seed}`` is checked once, at ``seed``, so one bad value gets one message."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent or not OmegaConf.is_interpolation(parent, leaf):
        return False
    match = _REFERENCE.match(str(OmegaConf.to_container(parent, resolve=False)[leaf]))
    return match is not None and match.group(1) in RULES
