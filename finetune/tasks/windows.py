"""Texts longer than ``task.max_length``: how much is cut, and the ways to read the rest (``task.long_text``).

- ``truncate``: the first ``max_length`` tokens (the tokenizer's own truncation; the default).
- ``head_tail``: the first ``head_tokens`` and the last ``window - head_tokens`` tokens of the text.
- ``chunks``: windows of the text, ``stride`` tokens shared by neighbours; the model scores each
  window and the task's kind aggregates them per document (``aggregation``: mean, max, vote).

Windows are cut from the token ids of the text without special tokens, and the special tokens
(``[CLS]``, ``[SEP]``, XLNet's ``<sep><cls>`` at the end) are kept as the tokenizer places them.
For a pair only the second text is windowed; the first is kept whole in every window (cut at
its end when it would leave the second text less than half of ``max_length``).

Imports NumPy only: the ONNX serving path reads long texts through it without PyTorch.
"""

import logging
import math
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from finetune.config.schemas import LongTextFields

log = logging.getLogger(__name__)

STRATEGIES = ("truncate", "head_tail", "chunks")
AGGREGATIONS = ("mean", "max", "vote")
Span = Tuple[int, int]  # [start, end) of the windowed text's tokens
CUT_WARNING_SHARE = 0.05  # more rows cut than this: a warning naming the settings


@dataclass
class LongText(LongTextFields):
    """``task.long_text``: how texts longer than the window are read, in training and in every prediction."""

    @classmethod
    def of(cls, node: Any) -> "LongText":
        """From a config node, a dict, an instance, or None (a run saved before long_text existed: truncate)."""
        if isinstance(node, cls):
            return node
        if node is None:
            return cls()
        if is_dataclass(node):
            node = asdict(node)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(node).items() if k in known})

    @property
    def windowed(self) -> bool:
        return self.strategy != "truncate"

    def as_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def describe(self) -> str:
        if self.strategy == "head_tail":
            return f"head_tail (head_tokens={self.head_tokens or 'max_length/4'})"
        if self.strategy == "chunks":
            return (
                f"chunks (stride={self.stride or 'window/2'}, aggregation={self.aggregation}, "
                f"max_train_windows={self.max_train_windows})"
            )
        return "truncate"


def long_text_errors(task: Any) -> List[str]:
    """What is wrong with ``task.long_text``, one line each, before anything loads."""
    settings, max_length = task.get("long_text"), task.max_length
    if settings is None:
        return []
    errors, key = [], "task.long_text"
    strategy, aggregation = settings.get("strategy"), settings.get("aggregation")
    if strategy not in STRATEGIES:
        errors.append(f"{key}.strategy={strategy!r} is not one of {', '.join(STRATEGIES)}.")
    if aggregation not in AGGREGATIONS:
        errors.append(f"{key}.aggregation={aggregation!r} is not one of {', '.join(AGGREGATIONS)}.")
    elif aggregation != "mean" and task.kind == "regression":
        errors.append(
            f"{key}.aggregation={aggregation}: a regression task aggregates its windows by their mean score; "
            f"set {key}.aggregation=mean."
        )
    stride, head = settings.get("stride"), settings.get("head_tokens")
    if stride is not None and not 0 <= stride < max_length:
        errors.append(
            f"{key}.stride={stride} must be at least 0 and less than task.max_length={max_length} "
            f"(it is the tokens two windows share), e.g. {key}.stride={max_length // 2}."
        )
    if head is not None and not 0 <= head < max_length:
        errors.append(
            f"{key}.head_tokens={head} must be at least 0 and less than task.max_length={max_length}, "
            f"e.g. {key}.head_tokens={max_length // 4}."
        )
    windows = settings.get("max_train_windows")
    if windows is not None and windows < 1:
        errors.append(f"{key}.max_train_windows={windows} must be null (every window) or at least 1.")
    return errors


def window_spans(length: int, size: int, stride: int, cap: Optional[int] = None) -> List[Span]:
    """Windows of ``size`` tokens over ``length`` tokens, each starting ``size - stride`` after the one before,
    the last one reaching the end; ``cap`` keeps that many, evenly spread, the first and the last among them."""
    if length <= size:
        return [(0, length)]
    step = size - stride
    count = 1 + math.ceil((length - size) / step)
    spans = [(i * step, min(i * step + size, length)) for i in range(count)]
    if cap is not None and len(spans) > cap:
        picked = [0] if cap == 1 else sorted({round(i * (len(spans) - 1) / (cap - 1)) for i in range(cap)})
        spans = [spans[i] for i in picked]
    return spans


def head_tail_spans(length: int, size: int, head: int) -> List[Span]:
    """The spans one head_tail window keeps: the first ``head`` tokens and the last ``size - head``."""
    if length <= size:
        return [(0, length)]
    return [(0, head), (length - (size - head), length)]


@dataclass
class Windowing:
    """``LongText`` with the numbers a tokenizer fixes: the tokens a window leaves the text."""

    settings: LongText
    max_length: int

    def check(self, specials: int) -> None:
        """Refuse settings that leave no room, now that the special tokens are known (before any text is read)."""
        from finetune.errors import FinetuneError

        room = self.max_length - specials
        key = "task.long_text"
        if self.settings.strategy == "chunks" and self.settings.stride is not None and self.settings.stride >= room:
            raise FinetuneError(
                f"{key}.stride={self.settings.stride} leaves no step: a window holds {room} text tokens here "
                f"(task.max_length={self.max_length} less {specials} special tokens); set {key}.stride below {room}."
            )
        if (
            self.settings.strategy == "head_tail"
            and self.settings.head_tokens is not None
            and self.settings.head_tokens > room
        ):
            raise FinetuneError(
                f"{key}.head_tokens={self.settings.head_tokens} is more than the {room} text tokens a window holds "
                f"(task.max_length={self.max_length} less {specials} special tokens); "
                f"set {key}.head_tokens={room // 4}."
            )

    def spans(self, length: int, room: int, cap: Optional[int]) -> List[List[Span]]:
        """Per window, the spans of the windowed text it keeps (``room``: the tokens left for that text)."""
        settings = self.settings
        if settings.strategy == "head_tail":
            head = min(settings.head_tokens if settings.head_tokens is not None else self.max_length // 4, room)
            return [head_tail_spans(length, room, head)]
        if settings.strategy == "chunks":
            stride = min(settings.stride if settings.stride is not None else room // 2, room - 1)
            return [[span] for span in window_spans(length, room, stride, cap)]
        return [[(0, min(length, room))]]


def window_positions(
    sequence_ids: Sequence[Optional[int]], windowing: Windowing, cap: Optional[int] = None
) -> List[List[int]]:
    """Per window, the positions of a whole (untruncated) encoding to keep.

    ``sequence_ids``: per position None (a special token), 0 (first text) or 1 (second text), as the
    tokenizer's ``sequence_ids`` gives them. The last text is windowed; the rest is kept in every window.
    """
    windowed_id = max((s for s in sequence_ids if s is not None), default=0)
    text = [i for i, s in enumerate(sequence_ids) if s == windowed_id]
    kept = [i for i, s in enumerate(sequence_ids) if s != windowed_id]
    first = [i for i in kept if sequence_ids[i] is not None]
    room = windowing.max_length - len(kept)
    if first and room < windowing.max_length // 2:  # a long first text: cut its end, leave the second half the window
        drop = set(first[len(first) - (windowing.max_length // 2 - room) :])
        kept = [i for i in kept if i not in drop]
        room = windowing.max_length - len(kept)
    windows = []
    for spans in windowing.spans(len(text), room, cap):
        chosen = set(kept).union(text[p] for start, end in spans for p in range(start, end))
        windows.append(sorted(chosen))
    return windows


def encode_windows(
    tokenizer: Any,
    columns: Sequence[Sequence[str]],
    windowing: Windowing,
    cap: Optional[int] = None,
    return_token_type_ids: Optional[bool] = None,
) -> Tuple[Dict[str, List[List[int]]], List[int]]:
    """Windows of each text (or pair) as the model takes them, and for each window its text's index."""
    windowing.check(tokenizer.num_special_tokens_to_add(pair=len(columns) == 2))
    encoded = tokenizer(*columns, truncation=False, return_token_type_ids=return_token_type_ids, verbose=False)
    features: Dict[str, List[List[int]]] = {key: [] for key in encoded.keys()}
    documents: List[int] = []
    for row in range(len(encoded["input_ids"])):
        for positions in window_positions(encoded.sequence_ids(row), windowing, cap):
            for key, values in encoded.items():
                features[key].append([values[row][p] for p in positions])
            documents.append(row)
    return features, documents


def length_summary(tokenizer: Any, columns: Sequence[Sequence[str]], max_length: int) -> Dict[str, Any]:
    """Token lengths of some texts (special tokens counted).

    Their median, 90th percentile, and the share over ``max_length``.
    """
    import numpy as np

    lengths = np.array([len(ids) for ids in tokenizer(*columns, truncation=False, verbose=False)["input_ids"]])
    return {
        "rows_measured": int(len(lengths)),
        "median_tokens": float(np.median(lengths)),
        "p90_tokens": float(np.percentile(lengths, 90)),
        "share_over_max_length": float((lengths > max_length).mean()),
        "max_length": max_length,
    }


def cut_warning(split: str, summary: Mapping[str, Any], settings: LongText) -> Optional[str]:
    """A warning naming the settings to change when more than 5% of a split's rows lose tokens."""
    share = summary["share_over_max_length"]
    if share <= CUT_WARNING_SHARE or settings.strategy == "chunks":
        return None
    lost = "lose their end" if settings.strategy == "truncate" else "lose their middle (head_tail)"
    return (
        f"{share:.0%} of the {split} rows are longer than task.max_length={summary['max_length']} tokens and {lost}: "
        f"raise task.max_length, or read them whole with task.long_text.strategy=chunks."
    )
