"""What a user's own file says of its task: text and label columns, label names and kind, detected where the
task leaves them unset (``null``), and what the data's rows warn of.

Columns are found by name first (``TEXT_NAMES``, ``PAIR_NAMES``, ``LABEL_NAMES``, any case), else as the only
plausible ones. Label names are sorted: whole numbers by value, words as Python sorts text (``A``-``Z``
before ``a``-``z``), so the same file always gives the same ids. The kind follows from the label cells: lists or
separated names are multi-label, fractions are regression, whole numbers and words are classes. What cannot
be told apart stops the run with one line naming the choices and the key to set.
"""

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

from finetune.errors import FinetuneError

log = logging.getLogger(__name__)

TEXT_NAMES = (
    "text",
    "sentence",
    "review",
    "content",
    "body",
    "document",
    "comment",
    "message",
    "tweet",
    "utterance",
    "abstract",
    "description",
    "question",
    "title",
)
PAIR_NAMES = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("text_a", "text_b"),
    ("text1", "text2"),
    ("question", "sentence"),
    ("query", "passage"),
)
LABEL_NAMES = (
    "label",
    "labels",
    "sentiment",
    "category",
    "categories",
    "class",
    "target",
    "intent",
    "topic",
    "tag",
    "tags",
    "emotion",
    "emotions",
    "score",
    "rating",
    "y",
)
ID_NAMES = ("id", "idx", "index", "row", "row_id", "uid", "guid", "key")
MAX_CLASSES = 200  # more distinct labels than this is no label column (or a regression target)
FEW_ROWS = 5  # a class with fewer training rows than this is warned of
SAMPLE_ROWS = 1000  # rows whose cells tell which column holds text
SEPARATORS = (",", "|", ";")  # how multi-label cells separate their labels, tried in this order


@dataclass
class Detected:
    """The settings detected from the train split, each with why, for the printed block and the run's record."""

    text_fields: List[str]
    label_field: str
    kind: str
    label_names: List[str]
    label_separator: str = ","
    why: Dict[str, str] = field(default_factory=dict)  # setting -> how it was found

    def as_dict(self) -> Dict[str, Any]:
        return {
            "text_fields": self.text_fields,
            "label_field": self.label_field,
            "kind": self.kind,
            "label_names": self.label_names,
            "label_separator": self.label_separator,
        }

    def describe(self, source: str) -> str:
        """The block a run prints: each detected setting, its value and why."""
        values = self.as_dict()
        lines = [f"Detected from {source} (set any of them to override):"]
        for key, why in self.why.items():
            value = values[key]
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            if key == "label_names" and len(value) > 12:
                shown = ", ".join(map(str, value[:12])) + f", ... ({len(value)} in all)"
            lines.append(f"  task.{key:<15} {shown}  ({why})")
        return "\n".join(lines)


def _by_name(columns: Sequence[str], names: Sequence[str], taken: Sequence[str] = ()) -> Optional[str]:
    lowered = {c.lower().strip(): c for c in columns if c not in taken}
    return next((lowered[n] for n in names if n in lowered), None)


def _is_text(values: Sequence[Any]) -> bool:
    return any(isinstance(v, str) and v.strip() for v in values) and all(
        isinstance(v, str) or v is None for v in values
    )


def _mean_length(values: Sequence[Any]) -> float:
    return sum(len(v) for v in values if isinstance(v, str)) / max(len(values), 1)


def detect_columns(
    columns: Sequence[str], sample: Dict[str, List[Any]], text_fields: Optional[List[str]], label_field: Optional[str]
):
    """``(text_fields, label_field, why)``: the columns as set, else by name, else the only plausible ones."""
    why: Dict[str, str] = {}
    settings = "task.text_fields=[<column>] and task.label_field=<column>"
    if label_field is None:
        taken = list(text_fields or [])
        label_field = _by_name(columns, LABEL_NAMES, taken)
        if label_field is not None:
            why["label_field"] = "by its name"
    if text_fields is None:
        pair = next(
            (pair for pair in PAIR_NAMES if all(_by_name(columns, [n], [label_field or ""]) for n in pair)), None
        )
        if pair:
            text_fields = [_by_name(columns, [n]) for n in pair]
            why["text_fields"] = "a sentence pair, by their names"
        else:
            named = _by_name(columns, TEXT_NAMES, [label_field or ""])
            if named is not None:
                text_fields = [named]
                why["text_fields"] = "by its name"
    others = [
        c for c in columns if c not in (text_fields or []) and c != label_field and c.lower().strip() not in ID_NAMES
    ]
    if text_fields is None:
        texts = [c for c in others if _is_text(sample[c])]
        longest = sorted(texts, key=lambda c: _mean_length(sample[c]), reverse=True)
        # the one text column, or one whose texts are at least twice as long as any other's
        if len(texts) == 1 or (
            len(texts) > 1 and _mean_length(sample[longest[0]]) >= 2 * _mean_length(sample[longest[1]])
        ):
            text_fields = [longest[0]]
            why["text_fields"] = "the column of longest texts" if len(texts) > 1 else "the only text column"
            others.remove(longest[0])
        else:
            found = f"text columns {texts}" if texts else "no column of texts"
            raise FinetuneError(
                f"Cannot tell which column holds the text: the file has {found} of {list(columns)}; set {settings}."
            )
    if label_field is None:
        if len(others) != 1:
            raise FinetuneError(
                f"Cannot tell which column holds the label: the file's columns are {list(columns)}, the text is "
                f"{text_fields}; set task.label_field=<column>."
            )
        label_field = others[0]
        why["label_field"] = "the only other column"
    return list(text_fields), label_field, why


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _name(value: Any) -> str:
    number = _number(value)
    return str(int(number)) if number is not None and number.is_integer() else str(value).strip()


def _sorted_names(values: Sequence[Any]) -> List[str]:
    """Label names in their documented order: whole numbers by value, else as Python sorts text."""
    names = {_name(v) for v in values}
    numbers = {n: _number(n) for n in names}
    if all(v is not None for v in numbers.values()):
        return sorted(names, key=lambda n: numbers[n])
    return sorted(names)


def detect_labels(values: Sequence[Any], label_field: str, kind: Optional[str], separator: str = ","):
    """``(kind, label_names, separator, why)`` from the train split's label cells; a set kind is kept."""
    why: Dict[str, str] = {}
    cells = [v for v in values if v is not None and not (isinstance(v, str) and not v.strip())]
    if not cells:
        raise FinetuneError(f"The label column '{label_field}' is empty in the train file; fill it.")
    lists = all(isinstance(v, (list, tuple)) for v in cells)
    numbers = [_number(v) for v in cells]
    key = "task.kind=single_label | multi_label | regression"
    if kind is None:
        if lists:
            kind, why["kind"] = "multi_label", "the label cells are lists"
        elif all(n is not None for n in numbers):
            whole = all(n.is_integer() for n in numbers)
            distinct = len(set(numbers))
            if not whole:
                kind, why["kind"] = "regression", "the labels are numbers with fractions"
            elif distinct <= 20 or distinct <= len(cells) ** 0.5:  # a few classes among many rows
                kind, why["kind"] = "single_label", f"{distinct} distinct whole numbers"
            else:
                raise FinetuneError(
                    f"The label column '{label_field}' holds {distinct} distinct whole numbers: set "
                    "task.kind=regression (a score to predict) or task.kind=single_label (classes)."
                )
        else:
            separator = _separator(cells, separator)
            if separator is not None:
                kind, why["kind"] = "multi_label", f"cells list several labels separated by '{separator}'"
            else:
                kind, why["kind"] = "single_label", "one word or name per row"
                separator = ","
    if kind == "regression":
        return kind, [label_field], separator, why
    if kind == "multi_label":
        parts = [p for v in cells for p in (v if isinstance(v, (list, tuple)) else str(v).split(separator))]
        names = _sorted_names([p for p in parts if str(p).strip()])
    else:
        names = _sorted_names(cells)
    if len(names) > MAX_CLASSES:
        raise FinetuneError(
            f"The label column '{label_field}' has {len(names)} distinct values, more than {MAX_CLASSES} classes: "
            f"is it the label? Set task.label_field=<column>, or {key}."
        )
    if len(names) < 2:
        raise FinetuneError(
            f"Every train row has the label {names[0]!r} in column '{label_field}': a classifier needs two classes "
            "or more; add rows of the other classes."
        )
    why["label_names"] = "sorted: whole numbers by value, text A-Z" if kind == "single_label" else "sorted"
    return kind, names, separator, why


def _separator(cells: Sequence[Any], preferred: str) -> Optional[str]:
    """The separator of multi-label cells, or None: separated parts must recombine, fewer parts than cells."""
    texts = [str(v) for v in cells]
    for separator in dict.fromkeys([preferred, *SEPARATORS]):
        if not any(separator in t for t in texts):
            continue
        parts = {p.strip() for t in texts for p in t.split(separator)}
        if "" not in parts and len(parts) < len(set(texts)):
            return separator
    return None


def detect(
    columns: Sequence[str],
    sample: Dict[str, List[Any]],
    labels_of,
    text_fields: Optional[List[str]],
    label_field: Optional[str],
    kind: Optional[str],
    label_names: Optional[List[str]],
    separator: str,
) -> Detected:
    """Every unset setting, detected; ``labels_of(column)`` gives that column's cells in the train split."""
    text_fields, label_field, why = detect_columns(columns, sample, text_fields, label_field)
    if label_names is None or kind is None:
        found_kind, names, separator, label_why = detect_labels(labels_of(label_field), label_field, kind, separator)
        why.update({k: v for k, v in label_why.items() if k != "label_names" or label_names is None})
        kind = kind or found_kind
        label_names = label_names if label_names is not None else names
    return Detected(list(text_fields), label_field, kind, list(label_names), separator, why)


def detect_in(train, task) -> Detected:
    """``detect`` on a train split (``datasets.Dataset``) for a task's settings; the kind's checks on the result."""
    from finetune.tasks.registry import kind_errors

    detected = detect(
        train.column_names,
        train.select(range(min(len(train), SAMPLE_ROWS)))[:],
        lambda column: list(train[column]),
        task.text_fields,
        task.label_field,
        task.kind,
        task.label_names,
        task.label_separator,
    )
    errors = kind_errors(SimpleNamespace(**{**vars(task), **detected.as_dict()}))  # now that the labels are known
    if errors:
        raise FinetuneError(
            "Invalid configuration (with the settings detected from the file):\n  " + "\n  ".join(errors)
        )
    return detected


def split_warnings(train, held_out: Dict[str, Any], text_fields: Sequence[str], kind, train_labels) -> List[str]:
    """What a task's loaded splits warn of: texts in both train and a held-out split, classes with very few rows."""

    def texts(split) -> List[Any]:
        columns = split.select_columns(list(text_fields))[:]
        return list(zip(*(columns[f] for f in text_fields)))

    counts = {}
    if kind.stratify:
        import numpy as np

        found = np.bincount(np.asarray(train_labels, dtype=int), minlength=kind.num_labels)
        counts = dict(zip(kind.label_names, found.tolist()))
    return row_warnings(texts(train), {name: texts(split) for name, split in held_out.items()}, counts)


def row_warnings(
    train_texts: Sequence[str], other_texts: Dict[str, Sequence[str]], counts: Dict[str, int]
) -> List[str]:
    """Warnings about the rows: texts in both train and a held-out split, and classes with very few rows."""
    warnings = []
    seen = set(train_texts)
    for split, texts in other_texts.items():
        shared = sum(1 for t in texts if t in seen)
        if shared:
            warnings.append(
                f"{shared} of the {len(texts)} {split} rows also appear in train (the same text): its scores "
                "overstate what the model does on new texts; remove them from one file."
            )
    few = {name: count for name, count in counts.items() if count < FEW_ROWS}
    if few:
        listed = ", ".join(f"{name}: {count}" for name, count in few.items())
        warnings.append(
            f"Classes with fewer than {FEW_ROWS} training rows ({listed}): the model can hardly learn them; "
            "label more rows of them."
        )
    return warnings
