"""Typed schemas of the config groups, their registration, and the checks Hydra cannot do.

Each group YAML lists its schema first in its defaults, so Hydra type-checks every value
(``task.max_length=abc`` fails at composition). The group nodes are deliberately left
open to unknown keys: Hydra would reject a typo with a bare "not in struct", while
``validate`` names it and suggests the closest valid key. This module imports nothing
heavy, so ``run.py --help`` and ``--cfg job`` stay fast and config errors come first.
"""

import ast
import dataclasses
import difflib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from finetune.ranges import range_errors


class FinetuneError(Exception):
    """A problem the user can fix (config, data, model, environment): shown without traceback."""


class StoppedBySignal(FinetuneError):
    """Training was stopped by SIGINT / SIGTERM after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


SPLIT_NAME = re.compile(r"^(train|(validation|test)(_\w+)?)$")  # validation_mismatched, test_ax, ...


def _no_files() -> Dict[str, Optional[str]]:
    return {"train": None, "validation": None, "test": None}


@dataclass
class TaskFields:
    problem: str = "single_label"  # single_label | multi_label | regression: see finetune/kinds.py
    path: Optional[str] = None  # hub dataset id, used when data_files.train is not set
    name: Optional[str] = None  # hub subset, e.g. "rte" of "nyu-mll/glue"
    split_names: Dict[str, str] = field(default_factory=dict)  # hub split -> ours, e.g. validation_matched: validation
    # local files by split: train, validation, test, and further validation_* / test_* splits
    data_files: Dict[str, Optional[str]] = field(default_factory=_no_files)
    column_names: Optional[List[str]] = None  # for CSV/TSV files without a header line
    quoted: bool = False  # TSV fields may be CSV-quoted ("..." with "" inside); GLUE's are not
    rename_columns: Dict[str, str] = field(default_factory=dict)  # file column -> task column, where present
    text_fields: List[str] = field(default_factory=lambda: ["text"])
    label_field: str = "label"
    label_names: List[str] = field(default_factory=list)
    label_separator: str = ","  # multi_label: a cell such as "3,17" or "joy,surprise"
    class_weights: Any = None  # null | balanced | [w0, w1, ...]: weighs the loss per class
    max_length: int = 128
    validation_size: float = 0.1  # carved from train when there is no validation split: fraction, or rows if >= 1
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    max_test_samples: Optional[int] = None
    metrics: List[str] = field(default_factory=list)  # names in finetune.metrics.METRICS; empty: the kind's defaults
    metric_for_best_model: Optional[str] = None  # one of metrics, or loss; None: the first of metrics
    examples: List[Any] = field(default_factory=list)  # texts, or [first, second] pairs
    # an unlabeled test split is predicted into <split>_predictions.tsv, or the name given here
    predictions_files: Dict[str, str] = field(default_factory=dict)
    predictions_as: str = "name"  # name | id: how a submission file writes the predicted classes


@dataclass
class TaskConfig(TaskFields):
    _target_: str = "finetune.data.TextClassificationData"


@dataclass
class ModelFields:
    name_or_path: str = ""
    trust_remote_code: bool = False
    attn_implementation: Optional[str] = None  # e.g. "sdpa" or "eager"; None lets transformers choose
    base_model: Optional[str] = None  # the hub id a local folder holds, for the model card; None: name_or_path if a hub id


@dataclass
class ModelConfig(ModelFields):
    _target_: str = "finetune.model.PretrainedClassifier"


@dataclass
class HardwareFields:
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    tf32: bool = False
    num_proc: Optional[int] = None  # tokenization processes; None: more than one only for large data
    dataloader_num_workers: int = 0
    pin_memory: Optional[bool] = None  # None: on with a GPU (page-locked host memory copies faster)
    fused_optimizer: bool = True  # AdamW in one kernel for all parameters (CUDA and CPU); false: the per-tensor loop
    # Pad each batch to a multiple of this many tokens: a handful of shapes (tensor cores want multiples
    # of 8; torch.compile builds a graph per shape) for a few padding tokens more. null: 8 with a GPU or
    # torch.compile, else 1 (each batch to its longest row: on a CPU the extra tokens cost what they save).
    pad_to_multiple_of: Optional[int] = None
    torch_compile: bool = False
    distributed: bool = False  # launched by torchrun / accelerate launch, one process per device


@dataclass
class HardwareConfig(HardwareFields):
    _target_: str = "finetune.hardware.Hardware"


GROUP_SCHEMAS = {"task": TaskConfig, "model": ModelConfig, "hardware": HardwareConfig}
CHOICES = {
    "task.problem": ("single_label", "multi_label", "regression"),
    "task.predictions_as": ("name", "id"),
    "hardware.device": ("auto", "cpu", "cuda"),
    "hardware.precision": ("auto", "bf16", "fp16", "fp32"),
}
# Set by the run itself, so a value in trainer.* would be silently replaced.
RUN_OWNED_TRAINER_FIELDS = ("output_dir",)


def register_configs() -> None:
    """Store each group's schema as ``<group>/schema``, open to unknown keys (see module doc)."""
    store = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name="schema", node=_open(OmegaConf.structured(schema)))
    store.store(group="trainer", name="schema", node=OmegaConf.create({}, flags={"struct": False}))


def _open(node: DictConfig) -> DictConfig:
    """Let unknown keys into ``node`` and its nested nodes (nested dataclasses carry their own flag)."""
    OmegaConf.set_struct(node, False)
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _open(child)
    return node


def with_schemas(cfg: DictConfig) -> DictConfig:
    """A config read back from a run folder's YAML, typed again as Hydra composed it (nested dataclasses)."""
    typed = cfg.copy()
    for group, schema in GROUP_SCHEMAS.items():
        if group in typed:
            typed[group] = OmegaConf.merge(_open(OmegaConf.structured(schema)), typed[group])
    return typed


def local_model_path(package: str, fallback: str) -> str:
    """Resolver ``${local_model:package,hub_id}``: the folder a model package ships, else the hub id."""
    if importlib.util.find_spec(package) is None:
        return fallback
    return str(importlib.import_module(package).get_model_path())


def glue_file(glue_dir: Optional[str], relative: str, optional: Optional[str] = None) -> Optional[str]:
    """Resolver ``${glue_file:${glue_dir},RTE/train.tsv[,optional]}``: that file of a local GLUE folder.

    None without ``glue_dir`` (the task reads the hub), and None for an optional file that is
    not there (GLUE's test sets are often left out).
    """
    if not glue_dir:
        return None
    path = Path(glue_dir).expanduser() / relative
    return str(path) if path.is_file() or optional is None else None


CONFIG_DIR_ENV = "FINETUNE_CONFIG_DIR"


def config_dirs() -> List[str]:
    """Resolver for ``hydra.searchpath``: the folders FINETUNE_CONFIG_DIR names (``:``-separated).

    Each may hold ``task/``, ``model/``, ``experiment/``, ... YAML files of its own, composed as
    if they were in ``conf/``; a preset of the same name in ``conf/`` wins.
    """
    value = os.environ.get(CONFIG_DIR_ENV, "")
    folders = [Path(part).expanduser().absolute() for part in value.split(os.pathsep) if part.strip()]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise SystemExit(f"{CONFIG_DIR_ENV}={value}: no such folder: {', '.join(missing)}.")
    return [f"file://{f}" for f in folders]


def register_resolvers() -> None:
    from finetune.distributed import run_time
    from finetune.resume import hydra_output_subdir, resume_run_dir

    for name, resolver, use_cache in (
        ("local_model", local_model_path, False),
        ("glue_file", glue_file, False),
        ("run_time", run_time, True),
        ("resume_run_dir", resume_run_dir, False),
        ("hydra_output_subdir", hydra_output_subdir, False),
        ("config_dirs", config_dirs, False),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=use_cache)


def _closest(key: str, valid: List[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" Did you mean '{match[0]}'?" if match else ""


def _unknown_keys(node: DictConfig, schema: type, prefix: str) -> List[str]:
    """Messages for keys of ``node`` that ``schema`` (a dataclass) does not define, recursively."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    errors = []
    for key in node.keys():
        if key not in fields:
            valid = sorted(k for k in fields if not k.startswith("_"))
            errors.append(f"Unknown config key '{prefix}.{key}'.{_closest(str(key), valid)} Valid keys: {', '.join(valid)}.")
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
                names = [s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
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
        errors.extend(_unknown_keys(cfg[group], schema, group))
    trainer_fields = set(training_argument_names())
    for key in cfg.trainer.keys():
        if key != "_target_" and key not in trainer_fields:
            hint = _closest(str(key), sorted(trainer_fields))
            errors.append(f"Unknown config key 'trainer.{key}': not a transformers.TrainingArguments field.{hint}")
        elif _is_token_key(str(key)) and cfg.trainer[key] is not None and not OmegaConf.is_interpolation(cfg.trainer, key):
            errors.append(f"trainer.{key} holds an access token in plain text, saved with the run; {TOKEN_HELP}.")
        elif key in RUN_OWNED_TRAINER_FIELDS:
            errors.append(f"trainer.{key} is set by the run (the run folder); move the run with hydra.run.dir=... instead.")
    for dotted, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, dotted)
        if value not in allowed:
            errors.append(f"{dotted}={value!r} is not one of {', '.join(allowed)}.")
    errors.extend(range_errors(cfg))
    task = cfg.task
    if task.problem in CHOICES["task.problem"]:
        errors.extend(task_kind_errors(task))
    for split in task.data_files:
        if not SPLIT_NAME.match(str(split)):
            errors.append(
                f"Unknown config key 'task.data_files.{split}'.{_closest(str(split), ['train', 'validation', 'test'])} "
                "Valid keys: train, validation, test, or further validation_<name> / test_<name> splits."
            )
    if len(task.text_fields) not in (1, 2):
        errors.append(f"task.text_fields must name one text column or two (a pair), got {list(task.text_fields)}.")
    if not task.data_files.get("train") and not task.path:
        errors.append("The task has no data: set task.data_files.train=<file> (local) or task.path=<hub dataset>.")
    if not cfg.model.name_or_path:
        errors.append("model.name_or_path is empty: give a hub id or a local model folder.")
    for example in task.examples:
        is_pair = not isinstance(example, str)
        if is_pair != (len(task.text_fields) == 2) or (is_pair and len(example) != 2):
            shape = "[first, second] pairs" if len(task.text_fields) == 2 else "plain strings"
            errors.append(f"task.examples must be {shape} for text_fields {list(task.text_fields)}, got {example!r}.")
            break
    if errors:
        raise FinetuneError("Invalid configuration:\n  " + "\n  ".join(errors))


def task_kind_errors(task: DictConfig) -> List[str]:
    """What the task's kind says of its labels, weights and metrics."""
    from finetune.kinds import KINDS
    from finetune.metrics import metric_errors

    kind = KINDS[task.problem](task.label_names, task.metrics, _plain(task.class_weights), task.label_separator)
    return kind.config_errors() + metric_errors(kind.name, kind.metrics, best_metric(task), kind.num_labels)


def best_metric(task: Any) -> str:
    """The metric that picks the best checkpoint: ``task.metric_for_best_model``, else the first of the task's metrics."""
    if task.metric_for_best_model:
        return task.metric_for_best_model
    if task.metrics:
        return task.metrics[0]
    from finetune.kinds import KINDS

    return KINDS[task.problem].default_metrics[0]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, DictConfig) or OmegaConf.is_list(value) else value
