"""Reading a task's local data files: the ``datasets`` builder and options for each file format, and one
message for a file that cannot be read."""

import csv
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from finetune.errors import FinetuneError

# builder and its options, by file extension. Text is never turned into NaN ("NA", "null"
# are words); TSV is read as GLUE ships it, without quoting; a byte-order mark is dropped.
LOCAL_FORMATS = {
    ".csv": ("csv", {"keep_default_na": False, "encoding": "utf-8-sig"}),
    ".tsv": ("csv", {"sep": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False, "encoding": "utf-8-sig"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}


def reader(
    file: Path,
    key: str,
    column_names: Optional[List[str]] = None,
    quoted: bool = False,
    text_fields: Sequence[str] = (),
) -> Tuple[str, Dict[str, Any]]:
    """The ``datasets`` builder and the pandas-style options that read ``file`` as the task says.

    ``column_names`` name the columns of a file without a header line; a file whose first
    line holds the text column names has a header and is read with it (GLUE's CoLA: the
    train file has none, the test file has one).
    """
    suffix = file.suffix.lower()
    if suffix not in LOCAL_FORMATS:
        raise FinetuneError(
            f"{key}: cannot read '{file.suffix}' files ({file}); use one of {', '.join(LOCAL_FORMATS)}."
        )
    builder, options = LOCAL_FORMATS[suffix]
    options = dict(options)
    if builder == "csv":
        if quoted:
            options.pop("quoting", None)
        if column_names:
            with file.open(encoding="utf-8-sig", errors="replace") as f:
                first = [cell.strip().strip('"') for cell in f.readline().rstrip("\r\n").split(options.get("sep", ","))]
            if not (text_fields and set(text_fields) <= set(first)):
                options["names"] = list(column_names)
    return builder, options


@contextmanager
def quieted(logger_name: Optional[str], level: int = logging.CRITICAL) -> Iterator[None]:
    """A library's logger (the root logger for None) shows only ``level`` and above inside the block."""
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def read_error(error: Exception, key: str, path: str, file: Path) -> FinetuneError:
    """One message for a data file that could not be read: what is wrong and what to do."""
    cause = error.__cause__ or error
    kind = file.suffix[1:].upper()
    if file.stat().st_size == 0 or "corresponds to no data" in str(cause):
        return FinetuneError(f"{key}: {path} has no rows.")
    if isinstance(cause, UnicodeDecodeError):
        return FinetuneError(
            f"{key}: {path} is not valid UTF-8 (byte {cause.object[cause.start : cause.start + 1]!r}: {cause.reason}); "
            "save it as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8 {file.name} > {file.stem}.utf8{file.suffix}"
        )
    if kind in ("CSV", "TSV"):
        return FinetuneError(
            f"{key}: {path} is not valid {kind}: {str(cause).strip().split('. ', 1)[-1]}. "
            "Fix that line (quote fields that hold the separator)."
        )
    return FinetuneError(f"{key}: could not read {path} as {kind}: {cause}")
