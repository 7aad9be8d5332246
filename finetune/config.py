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
    folds: Optional[int] = None  # k-fold cross-validation: split train into this many folds (seeded) ...
    fold: int = 0  # ... and validate on this one, 0 to folds - 1, training on the others
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
    # Dropout masks drawn as integers (finetune/dropout.py): on a CPU, torch's float masks are ~14% of a
    # step. null: on when training on the CPU; CUDA's own dropout kernels are fast already.
    fast_dropout: Optional[bool] = None
    distributed: bool = False  # launched by torchrun / accelerate launch, one process per device


@dataclass
class HardwareConfig(HardwareFields):
    _target_: str = "finetune.hardware.Hardware"


@dataclass
class PeftFields:  # LoRA's settings (peft=lora); null under peft=none, where every weight trains
    r: Optional[int] = None  # the adapters' rank
    lora_alpha: Optional[float] = None  # the adapters' output is scaled by lora_alpha / r
    lora_dropout: Optional[float] = None
    target_modules: Optional[List[str]] = None  # Linear layers to adapt; null: the architecture's (finetune/adapters.py)
    modules_to_save: Optional[List[str]] = None  # trained in full and saved; null: the classification head


@dataclass
class PeftConfig(PeftFields):
    _target_: str = "finetune.adapters.FullFineTuning"


GROUP_SCHEMAS = {"task": TaskConfig, "model": ModelConfig, "hardware": HardwareConfig, "peft": PeftConfig}
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
    for group in ("trainer", "callbacks"):  # any TrainingArguments field; any callback by name
        store.store(group=group, name="schema", node=OmegaConf.create({}, flags={"struct": False}))


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
        if group in cfg:  # a run folder saved before a group existed lacks it
            errors.extend(_unknown_keys(cfg[group], schema, group))
    from finetune.adapters import lora_field_errors

    errors.extend(lora_field_errors(cfg.get("peft")))
    errors.extend(callbacks_errors(cfg))
    trainer_fields = set(training_argument_names())
    for key in cfg.trainer.keys():
        if key != "_target_" and key not in trainer_fields:
            hint = EARLY_STOPPING_HINT if str(key).startswith("early_stopping") else _closest(str(key), sorted(trainer_fields))
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
    errors.extend(fold_errors(task))
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


def fold_errors(task: DictConfig) -> List[str]:
    """k-fold cross-validation carves validation out of train: it needs a fold in range and no validation file."""
    folds, fold = task.get("folds"), task.get("fold", 0)
    if folds is None:
        return [] if fold == 0 else [f"task.fold={fold} needs task.folds=K (the number of folds), e.g. task.folds=5 task.fold={fold}."]
    errors = []
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        return [f"task.folds={folds!r}: must be null (no cross-validation) or an integer >= 2, e.g. task.folds=5."]
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        errors.append(f"task.fold={fold!r}: must be an integer in [0, {folds}) with task.folds={folds}, e.g. task.fold=0.")
    if task.data_files.get("validation"):
        errors.append(
            f"task.folds={folds} validates on folds of train, but task.data_files.validation={task.data_files.validation} is given: "
            "set task.data_files.validation=null to cross-validate, or task.folds=null to use that file."
        )
    return errors


# A callback the run needs (train.py asks it whether a signal stopped training), and the early
# stopping callbacks whose settings must agree with the trainer's.
REQUIRED_CALLBACKS = {"stop_on_signal": "finetune.callbacks.StopOnSignal"}
EARLY_STOPPING_TARGETS = ("finetune.callbacks.EarlyStopping", "transformers.EarlyStoppingCallback", "transformers.trainer_callback.EarlyStoppingCallback")
EARLY_STOPPING_HINT = (
    " Early stopping is a callback: callbacks=early_stopping callbacks.early_stopping.early_stopping_patience=3 "
    "(and callbacks.early_stopping.early_stopping_threshold)."
)


def callbacks_errors(cfg: DictConfig) -> List[str]:
    """Each callback a node with a ``_target_``; the required ones present; early stopping consistent with the trainer."""
    callbacks = cfg.get("callbacks")
    if callbacks is None:
        return []
    errors = []
    for name, node in callbacks.items():
        if node is not None and not (isinstance(node, DictConfig) and node.get("_target_")):
            errors.append(f"callbacks.{name} must be a node with a _target_ (a transformers.TrainerCallback class), e.g. +callbacks.{name}._target_=my_module.MyCallback.")
    targets = {str(node.get("_target_")) for node in callbacks.values() if isinstance(node, DictConfig)}
    for name, target in REQUIRED_CALLBACKS.items():
        if target not in targets:
            errors.append(
                f"callbacks.{name} ({target}) is required: Ctrl-C and SIGTERM save a checkpoint through it before the run stops. "
                f"Keep it in your callbacks preset (callbacks.{name}._target_={target})."
            )
    trainer = cfg.trainer
    for name in (name for name, node in callbacks.items() if isinstance(node, DictConfig) and node.get("_target_") in EARLY_STOPPING_TARGETS):
        where = f"callbacks.{name} (early stopping)"
        if trainer.get("eval_strategy", "no") == "no":
            errors.append(f"{where} compares evaluations: set trainer.eval_strategy=epoch (or steps, with trainer.eval_steps).")
        if not trainer.get("load_best_model_at_end"):
            errors.append(
                f"{where} stops `patience` evaluations after the best one; without trainer.load_best_model_at_end=true "
                "the run would keep the last, worse model. Set trainer.load_best_model_at_end=true."
            )
        elif trainer.get("save_strategy", "steps") not in (trainer.get("eval_strategy"), "best"):
            errors.append(
                f"{where} keeps the best evaluated model, so a checkpoint must be saved at each evaluation: "
                f"trainer.save_strategy={trainer.get('save_strategy', 'steps')} differs from trainer.eval_strategy={trainer.get('eval_strategy')}; set them equal."
            )
    return errors


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
