"""The `task` group: load a classification data set (hub or local files), check it, tokenize it."""

import csv
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from finetune.config import FinetuneError, TaskFields
from finetune.files import write_text
from finetune.hub import hub_failure

log = logging.getLogger(__name__)

LABEL = "label"  # the column name DataCollatorWithPadding and the models expect
UNLABELED = -1  # the hub's marker for a test split without labels (GLUE)
SPLITS = ("train", "validation", "test")
# builder and its options, by file extension. Text is never turned into NaN ("NA", "null"
# are words); TSV is read as GLUE ships it, without quoting.
LOCAL_FORMATS = {
    ".csv": ("csv", {"keep_default_na": False}),
    ".tsv": ("csv", {"sep": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}


@dataclass
class TextClassificationData(TaskFields):
    """A task's splits: loaded, validated, labels as ids in ``label``, a validation split always present."""

    def load(self, seed: int):
        """Load every split, check columns, text and labels, carve validation if missing, apply max_*_samples."""
        from datasets import ClassLabel, DatasetDict

        raw = self._load_local() if self.data_files.train else self._load_hub()
        splits = DatasetDict({split: self._checked(ds, split, source) for split, (ds, source) in raw.items()})
        splits = splits.cast_column(LABEL, ClassLabel(names=list(self.label_names)))
        if "validation" not in splits:
            size = self.validation_size if self.validation_size < 1 else int(self.validation_size)
            self._check_validation_size(splits["train"], size)
            held_out = splits["train"].train_test_split(test_size=size, stratify_by_column=LABEL, seed=seed)
            splits["train"], splits["validation"] = held_out["train"], held_out["test"]
        for split, limit in (("train", self.max_train_samples), ("validation", self.max_eval_samples), ("test", self.max_test_samples)):
            if split in splits and limit is not None:
                splits[split] = splits[split].select(range(min(limit, len(splits[split]))))
        return splits

    def _check_validation_size(self, train, size: float) -> None:
        """The validation split is stratified: each class needs a row on both sides (so two rows at least).
        Said here, naming the setting, rather than by train_test_split in its own terms."""
        import math

        import numpy as np

        counts = np.bincount(label_array(train), minlength=len(self.label_names))
        rows, classes = len(train), int((counts > 0).sum())
        if counts[counts > 0].min() < 2:
            name = self.label_names[int(np.flatnonzero(counts == 1)[0])]
            raise FinetuneError(
                f"task.validation_size: the train split has one row of class '{name}', too few to hold one out for a "
                "validation split stratified by class; add rows of it or give task.data_files.validation."
            )
        held_out = math.ceil(size * rows) if size < 1 else size  # as train_test_split counts a fraction
        if not classes <= held_out <= rows - classes:
            example = min(max(classes, round(rows / 10)), rows - classes)
            none_left = ", which leaves no training rows" if held_out >= rows else ""
            raise FinetuneError(
                f"task.validation_size={size} holds out {held_out} of the {rows} train rows{none_left}; a split stratified over "
                f"{classes} classes needs {classes} to {rows - classes} (each class on both sides): e.g. task.validation_size={example}, "
                "or give task.data_files.validation."
            )

    def _load_hub(self) -> Dict[str, Any]:
        from datasets import load_dataset

        try:
            loaded = load_dataset(self.path, self.name)
        except Exception as error:  # datasets raises many kinds; every one means "not fetched"
            raise FinetuneError(hub_failure("data set", "/".join(filter(None, [self.path, self.name])), error)) from error
        return {split: (loaded[split], f"{self.path} [{split}]") for split in SPLITS if split in loaded}

    def _load_local(self) -> Dict[str, Any]:
        from datasets import load_dataset

        loaded = {}
        for split in SPLITS:
            path = getattr(self.data_files, split)
            if not path:
                continue
            file = Path(path).expanduser()
            if not file.is_file():
                raise FinetuneError(f"task.data_files.{split}: no such file: {path}")
            if file.suffix.lower() not in LOCAL_FORMATS:
                raise FinetuneError(
                    f"task.data_files.{split}: cannot read '{file.suffix}' files ({path}); use one of {', '.join(LOCAL_FORMATS)}."
                )
            builder, options = LOCAL_FORMATS[file.suffix.lower()]
            try:
                with _quiet_datasets_errors():  # the error is reported once, below
                    loaded[split] = (load_dataset(builder, data_files={split: str(file)}, split=split, **options), path)
            except Exception as error:
                raise _read_error(error, f"task.data_files.{split}", path, file) from error
        return loaded

    def _checked(self, ds, split: str, source: str):
        """Check text columns and labels row by row; return the split with ids in ``label``."""
        missing = [f for f in self.text_fields if f not in ds.column_names]
        if missing:
            raise FinetuneError(
                f"{source}: no column {', '.join(map(repr, missing))} (task.text_fields). "
                f"Its columns are {ds.column_names}; set task.text_fields to the text column(s)."
            )
        if len(ds) == 0:
            raise FinetuneError(f"{source}: the {split} split has no rows.")
        if self.label_field not in ds.column_names:
            if split != "test":
                raise FinetuneError(
                    f"{source}: no label column '{self.label_field}'. Its columns are {ds.column_names}; set task.label_field."
                )
            ds = ds.add_column(LABEL, [UNLABELED] * len(ds))  # an unlabeled test file: predict it
        elif self.label_field != LABEL:
            ds = ds.remove_columns([c for c in [LABEL] if c in ds.column_names]).rename_column(self.label_field, LABEL)
        names = list(self.label_names)
        label_ids = {name: i for i, name in enumerate(names)}
        allow_unlabeled = split == "test"

        def check(batch: Dict[str, List], rows: List[int]) -> Dict[str, List[int]]:
            for field in self.text_fields:
                for row, text in zip(rows, batch[field]):
                    if not isinstance(text, str) or not text.strip():
                        raise FinetuneError(f"{source}: row {row + 1} has no text in column '{field}' ({text!r}); fill or remove that row.")
            ids = []
            for row, value in zip(rows, batch[LABEL]):
                label_id = _label_id(value, label_ids)
                if label_id is None or not (0 <= label_id < len(names) or (allow_unlabeled and label_id == UNLABELED)):
                    raise FinetuneError(
                        f"{source}: row {row + 1} has label {value!r}, which is neither one of task.label_names "
                        f"{names} nor an id 0-{len(names) - 1}. Fix that row, or task.label_names."
                    )
                ids.append(label_id)
            return {LABEL: ids}

        # Cached like every map: the tokenized splits derive from this one, and only data on disk
        # lets datasets cache them, so a second run on the same data skips tokenization.
        return ds.map(check, batched=True, with_indices=True, desc=f"Checking {split}")

    def is_labeled(self, ds) -> bool:
        return bool((label_array(ds) != UNLABELED).any())

    def summary(self, splits) -> str:
        """Rows, columns and label counts of each split, one line each."""
        import numpy as np

        lines = ["Dataset summary:"]
        for split, ds in splits.items():
            labels = label_array(ds)
            counts = np.bincount(labels[labels != UNLABELED], minlength=len(self.label_names))
            per_label = ", ".join(f"{name}: {count}" for name, count in zip(self.label_names, counts))
            unlabeled = int((labels == UNLABELED).sum())
            label_text = "unlabeled" if unlabeled == len(ds) else per_label + (f", unlabeled: {unlabeled}" if unlabeled else "")
            lines.append(f"  {split:<10} {len(ds):>7} rows  columns: {', '.join(ds.column_names)}  labels: {label_text}")
        return "\n".join(lines)

    def check_max_length(self, tokenizer, model_name: str) -> None:
        limit = tokenizer.model_max_length
        if limit and limit < 1_000_000 and self.max_length > limit:  # XLNet and others report ~1e30: no limit
            raise FinetuneError(
                f"task.max_length={self.max_length} is more than {model_name} accepts ({limit} tokens); set task.max_length={limit} or less."
            )

    def tokenize(self, splits, tokenizer, num_proc: Optional[int]):
        """Token ids per row, unpadded: the collator pads each batch only to its longest row."""

        def encode(batch: Dict[str, List]) -> Dict[str, List]:
            return tokenizer(*(batch[f] for f in self.text_fields), truncation=True, max_length=self.max_length)

        from datasets import DatasetDict

        return DatasetDict(
            {
                name: split.map(
                    encode,
                    batched=True,
                    num_proc=num_proc,
                    remove_columns=[c for c in split.column_names if c != LABEL],  # splits may differ (GLUE's test)
                    desc=f"Tokenizing {name}",
                )
                for name, split in splits.items()
            }
        )

    def write_predictions(self, path: Path, label_ids: List[int]) -> None:
        """A GLUE-style submission file: ``index`` and ``prediction`` (the label name)."""
        rows = "".join(f"{i}\t{self.label_names[label]}\n" for i, label in enumerate(label_ids))
        write_text(path, "index\tprediction\n" + rows)


@contextmanager
def _quiet_datasets_errors():
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_error(error: Exception, key: str, path: str, file: Path) -> FinetuneError:
    """One message for a data file that could not be read: what is wrong and what to do."""
    cause = error.__cause__ or error
    kind = file.suffix[1:].upper()
    if file.stat().st_size == 0 or "corresponds to no data" in str(cause):
        return FinetuneError(f"{key}: {path} has no rows.")
    if isinstance(cause, UnicodeDecodeError):
        return FinetuneError(
            f"{key}: {path} is not valid UTF-8 (byte {cause.object[cause.start:cause.start + 1]!r}: {cause.reason}); save it as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8 {file.name} > {file.stem}.utf8{file.suffix}"
        )
    if kind in ("CSV", "TSV"):
        return FinetuneError(f"{key}: {path} is not valid {kind}: {str(cause).strip().split('. ', 1)[-1]}. Fix that line (quote fields that hold the separator).")
    return FinetuneError(f"{key}: could not read {path} as {kind}: {cause}")


def label_array(ds):
    """The label ids of a split as one numpy array, without reading the text columns."""
    return ds.select_columns([LABEL]).with_format("numpy")[:][LABEL]


def _label_id(value: Any, label_ids: Dict[str, int]) -> Optional[int]:
    """A label given as a name, an int, or an int written as text; None if it is none of those."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        if value in label_ids:
            return label_ids[value]
        stripped = value.strip()
        if stripped.lstrip("-").isdigit():
            return int(stripped)
        return label_ids.get(stripped)
    return None
