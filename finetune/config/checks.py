"""The checks Hydra cannot do: unknown keys with the closest valid one, choices, ranges, tokens, callbacks.

Each group's class (the ``_target_`` of its YAML) adds the checks only it can make through a
``config_errors(node)`` static method, found by name, so this module imports no group's code and
nothing heavy: config mistakes fail before any model or data is loaded.
"""

import ast
import dataclasses
import difflib
import importlib.util
from pathlib import Path
from typing import Any, List

from omegaconf import DictConfig, OmegaConf

from finetune.config.ranges import range_errors
from finetune.config.schemas import CHOICES, DETECTED_CHOICES, GROUP_SCHEMAS, RUN_OWNED_TRAINER_FIELDS
from finetune.errors import FinetuneError


def closest(key: str, valid: List[str]) -> str:
    """`` Did you mean 'x'?`` for the valid key nearest to a misspelt one, else an empty string."""
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" Did you mean '{match[0]}'?" if match else ""


def _unknown_keys(node: DictConfig, schema: type, prefix: str) -> List[str]:
    """Messages for keys of ``node`` that ``schema`` (a dataclass) does not define, recursively."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    errors = []
    for key in node.keys():
        if key not in fields:
            valid = sorted(k for k in fields if not k.startswith("_"))
            errors.append(
                f"Unknown config key '{prefix}.{key}'.{closest(str(key), valid)} Valid keys: {', '.join(valid)}."
            )
        elif dataclasses.is_dataclass(fields[key].type) and isinstance(node[key], DictConfig):
            errors.extend(_unknown_keys(node[key], fields[key].type, f"{prefix}.{key}"))
    return errors


def training_argument_names() -> List[str]:
    """Field names of ``transformers.TrainingArguments``, read from its source file.

    Importing transformers takes seconds; parsing the one file takes milliseconds and
    lets a misspelt ``trainer.<field>`` fail before any heavy import.
    """
    spec = importlib.util.find_spec("transformers")
    source = Path(spec.origin).with_name("training_args.py") if spec and spec.origin else None
    if source is not None and source.is_file():
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name == "TrainingArguments":
                names = [
                    s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                ]
                if names:
                    return names
    from transformers import TrainingArguments  # layout changed: fall back to the slow, exact way

    return [f.name for f in dataclasses.fields(TrainingArguments)]


TOKEN_HELP = "set HF_TOKEN in the environment (or run `hf auth login`), or write the value as '${oc.env:HF_TOKEN}'"


def _is_token_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1].lower().endswith("token")


def refuse_tokens_on_command_line(overrides: List[str]) -> None:
    """Stop before Hydra saves the config into the run folder if an override holds an access token."""
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if value and _is_token_key(key) and "${" not in value:
            raise SystemExit(f"{key}: an access token on the command line would be saved with the run; {TOKEN_HELP}.")


def validate(cfg: DictConfig) -> None:
    """Reject unknown keys, out-of-range choices and inconsistent settings, all at once."""
    errors = []
    for group, schema in GROUP_SCHEMAS.items():
        if group in cfg:  # a run folder saved before a group existed lacks it
            errors.extend(_unknown_keys(cfg[group], schema, group))
    errors.extend(callbacks_errors(cfg))
    trainer_fields = set(training_argument_names())
    for key in cfg.trainer.keys():
        if key != "_target_" and key not in trainer_fields:
            hint = (
                EARLY_STOPPING_HINT
                if str(key).startswith("early_stopping")
                else closest(str(key), sorted(trainer_fields))
            )
            errors.append(f"Unknown config key 'trainer.{key}': not a transformers.TrainingArguments field.{hint}")
        elif (
            _is_token_key(str(key))
            and cfg.trainer[key] is not None
            and not OmegaConf.is_interpolation(cfg.trainer, key)
        ):
            errors.append(f"trainer.{key} holds an access token in plain text, saved with the run; {TOKEN_HELP}.")
        elif key in RUN_OWNED_TRAINER_FIELDS:
            errors.append(
                f"trainer.{key} is set by the run (the run folder); move the run with hydra.run.dir=... instead."
            )
    for dotted, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, dotted)
        if value not in allowed and not (value is None and dotted in DETECTED_CHOICES):
            errors.append(f"{dotted}={value!r} is not one of {', '.join(allowed)}.")
    errors.extend(range_errors(cfg))
    for key in ("file", "test_file"):  # the file preset's keys: another task would train on its own data instead
        split = "train" if key == "file" else "test"
        if cfg.get(key) and OmegaConf.select(cfg, f"task.data_files.{split}") != cfg[key]:
            errors.append(f"{key}={cfg[key]} is read by the file task: add task=file (the task now is another's).")
    if not cfg.model.name_or_path:
        errors.append("model.name_or_path is empty: give a hub id or a local model folder.")
    for group in GROUP_SCHEMAS:
        errors.extend(group_errors(cfg.get(group), group))
    if errors:
        raise FinetuneError("Invalid configuration:\n  " + "\n  ".join(errors))


def group_errors(node: Any, group: str) -> List[str]:
    """What the group's own class (its ``_target_``) finds wrong with its settings (``config_errors``)."""
    if not isinstance(node, DictConfig) or not node.get("_target_"):
        return []
    from hydra.utils import get_class

    try:
        cls = get_class(str(node._target_))
    except Exception as error:  # a misspelt _target_: Hydra's message names what it tried
        return [
            f"{group}._target_={node._target_}: cannot import it ({type(error).__name__}); "
            "check the spelling of the class path."
        ]
    check = getattr(cls, "config_errors", None)
    return list(check(node)) if callable(check) else []


# The callbacks every run has, added by the code that builds the Trainer whether or not the config lists
# them (finetune/training/callbacks.py, RUN_CALLBACKS): a preset, or the saved config of a run started
# before, may still list one; it is then used, not added twice, and is no setting a resume compares.
RUN_CALLBACK_TARGETS = ("finetune.training.callbacks.StopOnSignal",)
# The early stopping callbacks, whose settings must agree with the trainer's.
EARLY_STOPPING_TARGETS = (
    "finetune.training.callbacks.EarlyStopping",
    "transformers.EarlyStoppingCallback",
    "transformers.trainer_callback.EarlyStoppingCallback",
)
EARLY_STOPPING_HINT = (
    " Early stopping is a callback: callbacks=early_stopping callbacks.early_stopping.early_stopping_patience=3 "
    "(and callbacks.early_stopping.early_stopping_threshold)."
)


def callbacks_errors(cfg: DictConfig) -> List[str]:
    """Each callback a node with a ``_target_``; early stopping consistent with the trainer."""
    callbacks = cfg.get("callbacks")
    if callbacks is None:
        return []
    errors = []
    for name, node in callbacks.items():
        if node is not None and not (isinstance(node, DictConfig) and node.get("_target_")):
            errors.append(
                f"callbacks.{name} must be a node with a _target_ (a transformers.TrainerCallback class), "
                f"e.g. +callbacks.{name}._target_=my_module.MyCallback."
            )
    trainer = cfg.trainer
    for name in (
        name
        for name, node in callbacks.items()
        if isinstance(node, DictConfig) and node.get("_target_") in EARLY_STOPPING_TARGETS
    ):
        where = f"callbacks.{name} (early stopping)"
        # null settings are sized to the data, which keeps an evaluation per epoch where early stopping is on
        if trainer.get("eval_strategy", "no") == "no":
            errors.append(
                f"{where} compares evaluations: set trainer.eval_strategy=epoch (or steps, with trainer.eval_steps)."
            )
        if trainer.get("load_best_model_at_end") is False:
            errors.append(
                f"{where} stops `patience` evaluations after the best one; without trainer.load_best_model_at_end=true "
                "the run would keep the last, worse model. Set trainer.load_best_model_at_end=true."
            )
        elif trainer.get("save_strategy", "steps") not in (
            evaluation := trainer.get("eval_strategy") or "epoch",
            "best",
            None,
        ):
            errors.append(
                f"{where} keeps the best evaluated model, so a checkpoint must be saved at each evaluation: "
                f"trainer.save_strategy={trainer.get('save_strategy', 'steps')} differs from "
                f"trainer.eval_strategy={evaluation}; set them equal."
            )
    return errors
