"""The `task` group: load a text data set (hub or local files), check it, tokenize it; its kind says what
labels mean."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from finetune.config.schemas import SPLIT_NAME, TaskFields
from finetune.errors import FinetuneError
from finetune.files import write_text
from finetune.hub import hub_failure
from finetune.tasks.detection import Detected
from finetune.tasks.formats import read_local
from finetune.tasks.kind import UNLABELED_MARKERS, TaskKind
from finetune.tasks.registry import KINDS
from finetune.tasks.validation import LABEL, carved, fold_split, label_array, trains_on_every_row
from finetune.tasks.windows import LongText, Windowing, cut_warning, encode_windows, length_summary

log = logging.getLogger(__name__)

DOCUMENT = "document"  # windowed splits: the row of the split each window comes from (the Trainer drops it)
LENGTH_SAMPLE = 2000  # rows per split whose token lengths are measured
SplitFiles = Dict[str, Tuple[Any, str]]  # split -> (dataset, where it came from, for messages)


@dataclass
class TextClassificationData(TaskFields):
    """A task's splits: loaded, checked, labels in ``label`` as the task's kind reads them, validation always present.

    Splits are ``train``, ``validation`` (picks the best checkpoint), ``test``, and any further
    ``validation_*`` (scored too) and ``test_*`` (scored, or predicted when unlabeled).
    """

    fold_rows = None  # with task.folds, after load(): the positions in train of the rows the fold validates on

    def __post_init__(self) -> None:
        # Settings left unset (null) are read off the train file first (finetune/tasks/detection.py); then settings
        # become the objects they name: how texts longer than max_length are read, and the kind (what the labels
        # mean: parsing, loss, predictions, metrics; finetune/tasks/registry.py).
        self.detected: Optional[Detected] = self._detected() if self.detects else None
        self.long_text = LongText.of(self.long_text)
        self.kind: TaskKind = KINDS[self.kind](
            self.label_names, self.metrics, self.class_weights, self.label_separator, self.calibration
        )

    @property
    def detects(self) -> bool:
        """Whether a setting is left to the data: text or label column, label names, kind."""
        return any(v is None for v in (self.text_fields, self.label_field, self.label_names, self.kind))

    def _detected(self) -> Detected:
        """Read the train file and fill in every setting left unset; anything set is kept as it is."""
        from finetune.tasks.detection import detect_in

        path = self.data_files.get("train")
        if not path:
            unset = [k for k in ("text_fields", "label_field", "label_names", "kind") if getattr(self, k) is None]
            raise FinetuneError(
                f"task.{unset[0]} is unset (null), and is only detected from a local train file; "
                f"set task.{unset[0]}, or give task.data_files.train=<file>."
            )
        detected = detect_in(self._renamed(self._read("train", path), path)[0], self)
        for key, value in detected.as_dict().items():
            setattr(self, key, value)  # construction not yet done: the kind is built from these next
        return detected

    @staticmethod
    def config_errors(task: Any) -> List[str]:
        """What is wrong with the ``task`` node (called by the config check, before anything loads)."""
        from finetune.tasks.settings import task_errors

        return task_errors(task)

    def load(self, seed: int):
        """Load every split, check columns, text and labels, carve validation if missing, apply max_*_samples."""
        from datasets import DatasetDict

        raw = self._load_local() if self.data_files.get("train") else self._load_hub()
        splits = DatasetDict({split: self._checked(ds, split, source) for split, (ds, source) in raw.items()})
        if self.folds:
            # the hub's own validation split (a validation file is refused by config.validate)
            if "validation" in splits:
                raise FinetuneError(
                    f"task.folds={self.folds}: {self.path} has a validation split of its own; "
                    "cross-validate on local files, or set task.folds=null."
                )
            # the limit first: the folds then cover exactly the rows that are trained and validated on
            splits["train"] = limited(splits["train"], self.max_train_samples)
            splits["train"], splits["validation"], self.fold_rows = fold_split(self, splits["train"], seed)
            log.info(
                "Fold %d of %d (seed %d): validating on %d train rows, training on the other %d",
                self.fold,
                self.folds,
                seed,
                len(splits["validation"]),
                len(splits["train"]),
            )
        elif "validation" not in splits and not trains_on_every_row(self, splits):
            splits["train"], splits["validation"] = carved(self, splits["train"], seed)
        splits = DatasetDict({name: splits[name] for name in sorted(splits, key=split_order)})
        for split in splits:
            if split == "train" and self.folds:
                continue  # limited before the folds were cut
            limit = (
                self.max_train_samples
                if split == "train"
                else self.max_eval_samples
                if split.startswith("validation")
                else self.max_test_samples
            )
            splits[split] = limited(splits[split], limit)
        return splits

    def _load_hub(self) -> SplitFiles:
        from datasets import load_dataset

        try:
            loaded = load_dataset(self.path, self.name)
        except Exception as error:  # datasets raises many kinds; every one means "not fetched"
            raise FinetuneError(
                hub_failure("data set", "/".join(filter(None, [self.path, self.name])), error)
            ) from error
        renamed = {self.split_names.get(split, split): split for split in loaded}
        return {ours: (loaded[hub], f"{self.path} [{hub}]") for ours, hub in renamed.items() if SPLIT_NAME.match(ours)}

    def _load_local(self) -> SplitFiles:
        return {split: (self._read(split, path), path) for split, path in self.data_files.items() if path}

    def _read(self, split: str, path: Any):
        """A split's local file as a ``datasets.Dataset`` (cached by datasets: detection and loading read it once);
        a list of files (``file=[train.csv,labeled.csv]``), read alike and joined on the columns they share."""
        key = f"task.data_files.{split}"
        files = [path] if isinstance(path, str) else [str(p) for p in path]
        parts = []
        for name in files:
            file = Path(name).expanduser()
            if not file.is_file():
                raise FinetuneError(f"{key}: no such file: {name}")
            parts.append(read_local(file, key, split, self.column_names, self.quoted, self.text_fields or ()))
        return parts[0] if len(parts) == 1 else joined(parts, files, key)

    def _renamed(self, ds, source: str) -> Tuple[Any, str]:
        """``ds`` with ``rename_columns`` applied, and what was renamed, for messages.

        The same preset reads the hub's columns and the original files' (GLUE's "#1 String", "Quality");
        a column the task names itself (``task.label_field=score``) is read as it is, not renamed away.
        """
        named = {*(self.text_fields or []), self.label_field}
        renames = {
            old: new
            for old, new in self.rename_columns.items()
            if old in ds.column_names and new not in ds.column_names and old not in named
        }
        if not renames:
            return ds, ""
        read_as = ", ".join(f"'{old}' as '{new}'" for old, new in renames.items())
        log.info("%s: task.rename_columns reads %s", source, read_as)
        return ds.rename_columns(renames), f"; task.rename_columns reads {read_as}"

    def _checked(self, ds, split: str, source: str):
        """Check text columns and labels row by row; return the split with the parsed labels in ``label``."""
        columns = ds.column_names  # as the file names them: what every message lists
        ds, renamed = self._renamed(ds, source)
        missing = [f for f in self.text_fields if f not in ds.column_names]
        if missing:
            hint = " (a file without a header line needs task.column_names)" if not self.column_names else ""
            raise FinetuneError(
                f"{source}: no column {', '.join(map(repr, missing))} (task.text_fields). "
                f"Its columns are {columns}{renamed}; set task.text_fields to the text column(s){hint}."
            )
        if len(ds) == 0:
            raise FinetuneError(f"{source}: the {split} split has no rows.")
        if self.label_field not in ds.column_names:
            if not split.startswith("test"):
                raise FinetuneError(
                    f"{source}: no label column '{self.label_field}'. "
                    f"Its columns are {columns}{renamed}; set task.label_field."
                )
            labeled = False  # an unlabeled test file: predict it
        else:
            labeled = not (split.startswith("test") and all(v in UNLABELED_MARKERS for v in ds[self.label_field]))
        kind = self.kind
        if labeled and not split.startswith("test"):
            ds = without_empty_labels(ds, self.label_field, source)

        def check(batch: Dict[str, List], rows: List[int]) -> Dict[str, List]:
            for field in self.text_fields:
                for row, text in zip(rows, batch[field]):
                    if not isinstance(text, str) or not text.strip():
                        raise FinetuneError(
                            f"{source}: row {row + 1} has no text in column '{field}' ({text!r}); "
                            "fill or remove that row."
                        )
            if not labeled:
                return {}
            labels = []
            for row, value in zip(rows, batch[self.label_field]):
                label = kind.parse(value)
                if label is None:
                    raise FinetuneError(
                        f"{source}: row {row + 1} has label {value!r}, which is {kind.expected()}. "
                        "Fix that row, or task.label_names."
                    )
                labels.append(label)
            return {LABEL: labels}

        other = [c for c in ds.column_names if c not in self.text_fields]  # only text and label go on
        # Cached like every map: the tokenized splits derive from this one, and only data on disk
        # lets datasets cache them, so a second run on the same data skips tokenization.
        checked = ds.map(check, batched=True, with_indices=True, remove_columns=other, desc=f"Checking {split}")
        return checked.cast_column(LABEL, kind.label_feature()) if labeled else checked

    def warnings(self, splits) -> List[str]:
        """What the rows warn of: texts in both train and a held-out split, classes with very few training rows."""
        from finetune.tasks.detection import split_warnings

        held_out = {name: split for name, split in splits.items() if name != "train" and not self.folds}
        return split_warnings(splits["train"], held_out, self.text_fields, self.kind, label_array(splits["train"]))

    def is_labeled(self, ds) -> bool:
        return LABEL in ds.column_names

    def summary(self, splits) -> str:
        """Rows, columns and labels of each split, one line each."""
        lines = ["Dataset summary:"]
        for split, ds in splits.items():
            label_text = self.kind.describe(label_array(ds)) if self.is_labeled(ds) else "unlabeled"
            lines.append(
                f"  {split:<10} {len(ds):>7} rows  columns: {', '.join(ds.column_names)}  labels: {label_text}"
            )
        return "\n".join(lines)

    def check_max_length(self, limit: Optional[int], model_name: str, source: str = "its tokenizer") -> None:
        """Refuse a ``max_length`` beyond the model's ``limit`` (None: no limit known)."""
        if limit and limit < 1_000_000 and self.max_length > limit:  # XLNet and others report ~1e30: no limit
            raise FinetuneError(
                f"task.max_length={self.max_length} is more than {model_name} accepts ({limit} tokens, says {source}); "
                f"set task.max_length={limit} or less."
            )

    def lengths(self, splits, tokenizer) -> Dict[str, Dict[str, Any]]:
        """Per split, the token lengths of up to ``LENGTH_SAMPLE`` rows spread over it.

        Logged, with a warning when many are cut.
        """
        report = {}
        for name, split in splits.items():
            step = max(1, len(split) // LENGTH_SAMPLE)
            sample = split.select(range(0, len(split), step)).select_columns(list(self.text_fields))[:]
            report[name] = length_summary(tokenizer, [sample[f] for f in self.text_fields], self.max_length)
            summary = report[name]
            log.info(
                "  %-10s tokens per row: median %.0f, 90th percentile %.0f; "
                "%.1f%% longer than task.max_length=%d (%d rows measured)",
                name,
                summary["median_tokens"],
                summary["p90_tokens"],
                100 * summary["share_over_max_length"],
                self.max_length,
                summary["rows_measured"],
            )
            warning = cut_warning(name, summary, self.long_text)
            if warning:
                log.warning(warning)
        return report

    def tokenize(self, splits, tokenizer, num_proc: Optional[int]):
        """Token ids per row, unpadded: the collator pads each batch only to its longest row.

        With ``task.long_text.strategy`` head_tail or chunks, rows are windows, each with the
        ``document`` (row of the split) it comes from; train keeps ``max_train_windows`` per document.
        """

        def encode(batch: Dict[str, List]) -> Dict[str, List]:
            return tokenizer(*(batch[f] for f in self.text_fields), truncation=True, max_length=self.max_length)

        windowing = Windowing(self.long_text, self.max_length)
        if self.long_text.windowed:  # settings that leave no room fail here, before any row is read
            windowing.check(tokenizer.num_special_tokens_to_add(pair=len(self.text_fields) == 2))

        def encode_long(batch: Dict[str, List], rows: List[int], cap: Optional[int]) -> Dict[str, List]:
            features, documents = encode_windows(tokenizer, [batch[f] for f in self.text_fields], windowing, cap)
            if LABEL in batch:
                features[LABEL] = [batch[LABEL][d] for d in documents]
            return {**features, DOCUMENT: [rows[d] for d in documents]}

        from datasets import DatasetDict

        def mapped(name: str, split):
            if not self.long_text.windowed:
                return split.map(
                    encode,
                    batched=True,
                    num_proc=num_proc,
                    remove_columns=[c for c in split.column_names if c != LABEL],
                    desc=f"Tokenizing {name}",
                )
            cap = self.long_text.max_train_windows if name == "train" else None
            return split.map(
                encode_long,
                batched=True,
                with_indices=True,
                num_proc=num_proc,
                fn_kwargs={"cap": cap},
                remove_columns=split.column_names,
                desc=f"Tokenizing {name} into windows",
            )

        return DatasetDict({name: mapped(name, split) for name, split in splits.items()})

    def predictions_path(self, run_dir: Path, split: str) -> Path:
        return run_dir / self.predictions_files.get(split, f"{split}_predictions.tsv")

    def write_predictions(self, path: Path, predictions) -> None:
        """A GLUE-style submission file: ``index`` and ``prediction`` (label name or id, or score)."""
        as_ids = self.predictions_as == "id"
        rows = "".join(f"{i}\t{self.kind.prediction_cell(p, as_ids)}\n" for i, p in enumerate(predictions))
        write_text(path, "index\tprediction\n" + rows)


def limited(split, limit: Optional[int]):
    """The first ``limit`` rows of a split (all of them for None)."""
    return split if limit is None else split.select(range(min(limit, len(split))))


def split_order(name: str) -> Tuple[int, str]:
    """train, validation, validation_*, test, test_*: the order splits are shown and scored in."""
    return (0 if name == "train" else 1 if name.startswith("validation") else 2, name)


def is_empty(value: Any) -> bool:
    """A label cell left empty: nothing, NaN, or blanks."""
    return (
        value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip())
    )


def without_empty_labels(ds, label_field: str, source: str):
    """``ds`` without the rows whose label cell is empty (a suggestion file labeled in part), logged with a count.

    Read in Arrow, not row by row: a train file of millions of rows costs a mask, not a Python list."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    column = ds.with_format("arrow")[label_field]
    empty = pc.is_null(column, nan_is_null=True)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        empty = pc.or_(empty, pc.equal(pc.utf8_trim_whitespace(column), ""))
    mask = np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool)
    if not mask.any():
        return ds
    if mask.all():
        raise FinetuneError(f"{source}: no row has a label in column '{label_field}'; fill in some labels first.")
    log.warning("%s: %d of %d rows have no label yet: trained without them", source, int(mask.sum()), len(ds))
    return ds.select(np.flatnonzero(~mask))


def _cell(value: Any) -> Any:
    """A cell as text, for columns whose type differs between files: 3.0 as "3" (a label read with empty cells)."""
    if is_empty(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def joined(parts: List[Any], files: List[str], key: str):
    """Datasets read from several files, one after the other, on the columns all of them have (in the first's
    order); a column typed differently in two files (whole numbers, and whole numbers with empty cells) as text."""
    from datasets import Dataset, concatenate_datasets

    shared = [c for c in parts[0].column_names if all(c in p.column_names for p in parts[1:])]
    if not shared:
        raise FinetuneError(f"{key}: the files {files} share no column; give them the same column names.")
    parts = [p.select_columns(shared) for p in parts]
    mixed = [c for c in shared if len({str(p.features[c]) for p in parts}) > 1]
    if mixed:
        parts = [
            Dataset.from_dict({c: [_cell(v) for v in p[c]] if c in mixed else p[c] for c in shared}) for p in parts
        ]
    return concatenate_datasets(parts)
