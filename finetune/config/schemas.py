"""Typed schemas of the config groups, registered with Hydra, and saved configs typed again.

Each group YAML lists its schema first in its defaults, so Hydra type-checks every value
(``task.max_length=abc`` fails at composition). The group nodes are deliberately left
open to unknown keys: Hydra would reject a typo with a bare "not in struct", while
``finetune.config.checks.validate`` names it and suggests the closest valid key.
"""

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

SPLIT_NAME = re.compile(r"^(train|(validation|test)(_\w+)?)$")  # validation_mismatched, test_ax, ...


def _no_files() -> Dict[str, Optional[str]]:
    return {"train": None, "validation": None, "test": None}


@dataclass
class LongTextFields:  # task.long_text: how texts longer than max_length are read (finetune/tasks/windows.py)
    strategy: str = "truncate"  # truncate | head_tail | chunks
    head_tokens: Optional[int] = None  # head_tail: tokens kept from the start; null: a quarter of max_length
    stride: Optional[int] = None  # chunks: tokens two neighbouring windows share; null: half the window
    aggregation: str = "mean"  # chunks: mean | max | vote over a document's windows
    max_train_windows: Optional[int] = 8  # chunks: windows per training document at most, evenly spread; null: all


@dataclass
class TaskFields:
    kind: Optional[str] = "single_label"  # single_label | multi_label | regression (registry.py); null: detected
    path: Optional[str] = None  # hub dataset id, used when data_files.train is not set
    name: Optional[str] = None  # hub subset, e.g. "rte" of "nyu-mll/glue"
    split_names: Dict[str, str] = field(default_factory=dict)  # hub split -> ours, e.g. validation_matched: validation
    # local files by split: train, validation, test, and further validation_* / test_* splits
    data_files: Dict[str, Any] = field(default_factory=_no_files)  # split -> a file, or a list of files (joined)
    column_names: Optional[List[str]] = None  # for CSV/TSV files without a header line
    quoted: Optional[bool] = (
        False  # TSV fields may be CSV-quoted ("..." with "" inside); GLUE's are not; null: detected
    )
    rename_columns: Dict[str, str] = field(default_factory=dict)  # file column -> task column, where present
    # These three, null: detected from the train file (finetune/tasks/detection.py), as the file preset leaves them
    text_fields: Optional[List[str]] = field(default_factory=lambda: ["text"])  # one column, or two for pairs
    label_field: Optional[str] = "label"  # the column of labels
    label_names: Optional[List[str]] = field(default_factory=list)  # class names in label-id order
    label_separator: str = ","  # multi_label: a cell such as "3,17" or "joy,surprise"
    class_weights: Any = None  # null | balanced | [w0, w1, ...]: weighs the loss per class
    # temperature | none: fitted on validation after training, folded into the head; auto: temperature where
    # validation has enough rows to fit it (100 rows: MIN_CALIBRATION_ROWS, finetune/tasks/kind.py), else none
    calibration: str = "auto"
    max_length: int = 128  # tokens per text (or pair) the model reads; longer texts: see long_text
    long_text: LongTextFields = field(default_factory=LongTextFields)
    # carved from train when there is no validation split: fraction, or rows if >= 1; null: sized to the data
    validation_size: Optional[float] = 0.1
    folds: Optional[int] = None  # k-fold cross-validation: split train into this many folds (seeded) ...
    fold: int = 0  # ... and validate on this one, 0 to folds - 1, training on the others
    max_train_samples: Optional[int] = (
        None  # train on the first this many rows of train (after validation is carved); null: all
    )
    max_eval_samples: Optional[int] = None  # score validation on at most this many rows; null: all
    max_test_samples: Optional[int] = None  # score or predict at most this many test rows; null: all
    metrics: List[str] = field(
        default_factory=list
    )  # names in finetune.tasks.metrics.METRICS; empty: the kind's defaults
    metric_for_best_model: Optional[str] = None  # one of metrics, or loss; None: the first of metrics
    examples: List[Any] = field(default_factory=list)  # texts, or [first, second] pairs; empty: a few own rows
    title: Optional[str] = None  # the task's name in run folders and model cards; null: the preset's or the file's
    # an unlabeled test split is predicted into <split>_predictions.tsv, or the name given here
    predictions_files: Dict[str, str] = field(default_factory=dict)
    predictions_as: str = "name"  # name | id: how a submission file writes the predicted classes


@dataclass
class TaskConfig(TaskFields):
    _target_: str = "finetune.tasks.data.TextClassificationData"


@dataclass
class ModelFields:
    name_or_path: str = ""  # a Hub model id or a local model folder
    trust_remote_code: bool = False  # run code a Hub repository ships; off: only the architectures transformers has
    attn_implementation: Optional[str] = None  # e.g. "sdpa" or "eager"; None lets transformers choose
    base_model: Optional[str] = (
        None  # the hub id a local folder holds, for the model card; None: name_or_path if a hub id
    )
    # fresh: transformers' random head | prototypes: the few-label head (finetune/training/prototypes.py) |
    # auto: prototypes for single-label tasks under 1,000 training rows, else fresh
    head: str = "auto"
    # Pairs of training rows the body trains on first, SetFit's contrastive stage, with the few-label head
    # (finetune/training/contrastive.py); 0: none. E.g. 320 for 32 rows (SetFit's 5 iterations); not with peft=lora.
    contrastive_pairs: int = 0


@dataclass
class ModelConfig(ModelFields):
    _target_: str = "finetune.training.model.PretrainedClassifier"


@dataclass
class HardwareFields:
    device: str = "auto"  # auto (CUDA, else Apple silicon's MPS, else the CPU) | cpu | cuda | mps
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    tf32: bool = False  # TensorFloat-32 matrix products on Ampere and newer GPUs: faster, slightly less exact
    num_proc: Optional[int] = None  # tokenization processes; None: more than one only for large data
    dataloader_num_workers: int = 0  # processes that collate batches; 0: the training process itself
    pin_memory: Optional[bool] = None  # None: on with a GPU (page-locked host memory copies faster)
    fused_optimizer: bool = True  # AdamW in one kernel for all parameters (CUDA and CPU); false: the per-tensor loop
    # Pad each batch to a multiple of this many tokens: a handful of shapes (tensor cores want multiples
    # of 8; torch.compile builds a graph per shape) for a few padding tokens more. null: 8 with a GPU or
    # torch.compile, else 1 (each batch to its longest row: on a CPU the extra tokens cost what they save).
    pad_to_multiple_of: Optional[int] = None
    torch_compile: bool = False  # compile the model with torch.compile (worth it on a GPU for long runs)
    # Dropout masks drawn as integers (finetune/training/dropout.py): on a CPU, torch's float masks are ~14% of a
    # step. null: on when training on the CPU; CUDA's own dropout kernels are fast already.
    fast_dropout: Optional[bool] = None
    distributed: bool = False  # launched by torchrun / accelerate launch, one process per device


@dataclass
class HardwareConfig(HardwareFields):
    _target_: str = "finetune.training.hardware.Hardware"


@dataclass
class PeftFields:  # LoRA's settings (peft=lora); null under peft=none, where every weight trains
    r: Optional[int] = None  # the adapters' rank
    lora_alpha: Optional[float] = None  # the adapters' output is scaled by lora_alpha / r
    lora_dropout: Optional[float] = None  # dropout on the adapters' input
    target_modules: Optional[List[str]] = (
        None  # Linear layers to adapt; null: the architecture's (finetune/training/adapters.py)
    )
    modules_to_save: Optional[List[str]] = None  # trained in full and saved; null: the classification head
    # The learning rate this method brings: trainer.learning_rate's default (${peft_learning_rate:...});
    # null: the trainer's.
    learning_rate: Optional[float] = None


@dataclass
class PeftConfig(PeftFields):
    _target_: str = "finetune.training.adapters.FullFineTuning"


GROUP_SCHEMAS = {"task": TaskConfig, "model": ModelConfig, "hardware": HardwareConfig, "peft": PeftConfig}
CHOICES = {
    "task.kind": ("single_label", "multi_label", "regression"),
    "task.predictions_as": ("name", "id"),
    "task.calibration": ("auto", "temperature", "none"),
    "model.head": ("auto", "fresh", "prototypes"),
    "hardware.device": ("auto", "cpu", "cuda", "mps"),
    "hardware.precision": ("auto", "bf16", "fp16", "fp32"),
}
DETECTED_CHOICES = ("task.kind",)  # null: detected from the train file (finetune/tasks/detection.py)
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


# Where the classes a run folder's saved config names (``_target_``) live since the package was split
# into subpackages: a folder written before then still resumes, predicts, exports and compares.
MOVED_MODULES = {
    "finetune.data": "finetune.tasks.data",
    "finetune.model": "finetune.training.model",
    "finetune.hardware": "finetune.training.hardware",
    "finetune.adapters": "finetune.training.adapters",
    "finetune.callbacks": "finetune.training.callbacks",
    "finetune.leaderboard": "finetune.sweeps.leaderboard",
}


def current_target(target: str) -> str:
    """A ``_target_`` as the code now names it.

    E.g. ``finetune.data.TextClassificationData`` -> ``finetune.tasks.data...``.
    """
    module, _, name = target.rpartition(".")
    return f"{MOVED_MODULES[module]}.{name}" if module in MOVED_MODULES else target


def _current_targets(node: Any) -> None:
    """Rename every moved ``_target_`` in ``node`` and the nodes below it, in place."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            value = node._get_node(key)
            if key == "_target_" and isinstance(node[key], str):
                node[key] = current_target(node[key])
            elif isinstance(value, DictConfig):
                _current_targets(value)


# Settings renamed since: a run folder's saved config (or a user's preset) that names the old key still works.
RENAMED_KEYS = {"task": {"problem": "kind"}}


def current_names(cfg: DictConfig) -> DictConfig:
    """A copy of a config read back from a run folder's YAML (or composed from a user's presets), its ``_target_``s
    and renamed keys named as the code now names them."""
    renamed = cfg.copy()
    _current_targets(renamed)
    for group, keys in RENAMED_KEYS.items():
        node = renamed.get(group)
        if not isinstance(node, DictConfig):
            continue
        for old, new in keys.items():
            if old in node:
                with open_dict(node):
                    node[new] = node.pop(old)
    return renamed


def with_schemas(cfg: DictConfig) -> DictConfig:
    """A config read back from a run folder's YAML, typed again as Hydra composed it (nested dataclasses),
    its ``_target_``s named as the code now names them."""
    typed = current_names(cfg)
    for group, schema in GROUP_SCHEMAS.items():
        if group in typed:
            typed[group] = OmegaConf.merge(_open(OmegaConf.structured(schema)), typed[group])
    return typed
