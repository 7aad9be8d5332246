"""Reading a task's local data files: the ``datasets`` builder and options for each file format, and one
message for a file that cannot be read.

``read_local`` reads one file as a ``datasets.Dataset``: CSV (its separator, ``,`` ``;`` tab or ``|``, read off
its first lines), TSV (GLUE's unquoted, or CSV-quoted where the file's fields are), JSON / JSON Lines, Parquet,
and Excel (.xlsx, with openpyxl). ``reader`` gives the ``datasets`` builder and pandas-style options of the text
and Parquet formats, for callers that read the file themselves (finetune/serving/tables.py).
"""

import codecs
import csv
import functools
import io
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from finetune.errors import FinetuneError
from finetune.packages import DISTRIBUTION

log = logging.getLogger(__name__)

# builder and its options, by file extension. Text is never turned into NaN ("NA", "null"
# are words); TSV is read as GLUE ships it, without quoting; a byte-order mark is dropped.
LOCAL_FORMATS = {
    ".csv": ("csv", {"keep_default_na": False, "encoding": "utf-8-sig"}),
    ".tsv": ("csv", {"sep": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False, "encoding": "utf-8-sig"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
# read by read_local only, with pandas (openpyxl reads .xlsx and .xlsm; the old binary .xls needs xlrd, not read)
EXCEL_FORMATS = (".xlsx", ".xlsm")
TEXT_FORMATS = (".csv", ".tsv", ".json", ".jsonl")  # the formats whose encoding is checked

CSV_SEPARATORS = (",", ";", "\t", "|")  # the separators a .csv file may use; the first is the default
SEPARATOR_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
SAMPLE_BYTES = 1 << 16  # how much of a file separator and quoting detection read
# byte-order marks of the encodings refused at once (UTF-32's first: it starts with UTF-16's)
WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32", "utf-32"),
    (b"\x00\x00\xfe\xff", "UTF-32", "utf-32"),
    (b"\xff\xfe", "UTF-16", "utf-16"),
    (b"\xfe\xff", "UTF-16", "utf-16"),
)


def read_local(
    file: Path,
    key: str,
    split: str,
    column_names: Optional[List[str]] = None,
    quoted: Optional[bool] = None,
    text_fields: Sequence[str] = (),
) -> Any:
    """``file`` as a ``datasets.Dataset`` named ``split``, read as its format and the task say; ``key`` (the
    setting that names the file, e.g. ``task.data_files.train``) starts every message.

    ``column_names`` name the columns of a CSV, TSV or Excel file without a header line (see ``reader``).
    ``quoted`` is for TSV: True reads CSV-quoted fields, False reads as GLUE ships it (no quoting: a ``"``
    is text), None detects it from the file's first lines. A file that cannot be read raises one
    FinetuneError line: what is wrong and what to do.
    """
    file = Path(file)
    if not file.is_file():
        raise FinetuneError(f"{key}: no such file: {file}")
    suffix = file.suffix.lower()
    if suffix in EXCEL_FORMATS:
        return _read_excel(file, key, split, column_names, text_fields)
    if suffix not in LOCAL_FORMATS:
        raise _unsupported(file, key, (*LOCAL_FORMATS, *EXCEL_FORMATS))
    builder, options = reader(file, key, column_names, quoted, text_fields)
    if builder == "json":  # pyarrow's JSON reader takes bad UTF-8 in, and fails only when the text is read
        stat = file.stat()
        bad = _first_bad_utf8(str(file.resolve()), stat.st_mtime_ns, stat.st_size)
        if bad:
            raise _not_utf8(file, key, str(file), bad)
    from datasets import load_dataset

    try:
        with quieted("datasets"):  # the error is reported once, below
            return load_dataset(builder, data_files={split: str(file)}, split=split, **options)
    except Exception as error:
        raise read_error(error, key, str(file), file) from error


def reader(
    file: Path,
    key: str,
    column_names: Optional[List[str]] = None,
    quoted: Optional[bool] = None,
    text_fields: Sequence[str] = (),
) -> Tuple[str, Dict[str, Any]]:
    """The ``datasets`` builder and the pandas-style options that read ``file`` as the task says.

    ``column_names`` name the columns of a file without a header line; a file whose first
    line holds the text column names has a header and is read with it (GLUE's CoLA: the
    train file has none, the test file has one). A CSV file's separator is detected (``,`` unless
    its first lines are ``;``-, tab- or ``|``-separated); a TSV file is CSV-quoted where ``quoted``
    is True, or None and its fields are quoted (``_tsv_is_quoted``). A UTF-16 or UTF-32 file is refused.
    """
    suffix = file.suffix.lower()
    if suffix not in LOCAL_FORMATS:
        raise _unsupported(file, key, LOCAL_FORMATS)
    if suffix in TEXT_FORMATS:
        wide = _wide_encoding(file, key, str(file))
        if wide:
            raise wide
    builder, options = LOCAL_FORMATS[suffix]
    options = dict(options)
    if builder != "csv":
        return builder, options
    sample, truncated = _sample(file)
    expected = len(column_names) if column_names else None
    if suffix == ".tsv":
        if quoted is None:
            quoted = _tsv_is_quoted(sample, truncated)
            if quoted:
                _note(f"{key}: {file} has CSV-quoted fields: read with quoting (task.quoted=false reads it as GLUE)")
        if quoted:
            options.pop("quoting", None)
    else:
        separator = _csv_separator(sample, truncated, expected)
        if separator != ",":
            options["sep"] = separator
            _note(f"{key}: {file} is {SEPARATOR_NAMES[separator]}-separated")
    if column_names:
        rows = _records(sample, truncated, options.get("sep", ","), options.get("quoting", csv.QUOTE_MINIMAL))
        first = [cell.strip().strip('"') for cell in (rows[0] if rows else [])]
        if not (text_fields and set(text_fields) <= set(first)):
            options["names"] = list(column_names)
    return builder, options


_NOTED: Set[str] = set()


def _note(message: str) -> None:
    """Log ``message`` at INFO once: a file is read for detection, then loaded."""
    if message not in _NOTED:
        _NOTED.add(message)
        log.info(message)


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
        return _wide_encoding(file, key, path) or _not_utf8(file, key, path, cause)
    if kind in ("CSV", "TSV"):
        return FinetuneError(
            f"{key}: {path} is not valid {kind}: {str(cause).strip().split('. ', 1)[-1]}. "
            "Fix that line (quote fields that hold the separator)."
        )
    return FinetuneError(f"{key}: could not read {path} as {kind}: {cause}")


def _unsupported(file: Path, key: str, formats: Sequence[str]) -> FinetuneError:
    return FinetuneError(f"{key}: cannot read '{file.suffix}' files ({file}); use one of {', '.join(formats)}.")


def _utf8_fix(file: Path, source: str) -> str:
    return f"save it as UTF-8, e.g. iconv -f {source} -t utf-8 {file.name} > {file.stem}.utf8{file.suffix}"


def _wide_encoding(file: Path, key: str, path: str) -> Optional[FinetuneError]:
    """The one-line refusal of a UTF-16 or UTF-32 text file (its byte-order mark, or NUL bytes), else None."""
    with file.open("rb") as f:
        start = f.read(4096)
    for bom, name, source in WIDE_BOMS:
        if start.startswith(bom):
            return FinetuneError(
                f"{key}: {path} is {name} (it starts with the byte-order mark {bom!r}), not UTF-8; "
                + _utf8_fix(file, source)
            )
    nul = start.find(b"\x00")  # never in UTF-8 text; UTF-16 without a byte-order mark has one in every ASCII character
    if nul >= 0:
        return FinetuneError(
            f"{key}: {path} holds NUL bytes (the first at byte {nul}): it is likely UTF-16, not UTF-8; "
            + _utf8_fix(file, "utf-16le" if nul % 2 else "utf-16be")
        )
    return None


def _not_utf8(file: Path, key: str, path: str, cause: UnicodeDecodeError) -> FinetuneError:
    """The one-line refusal of a file that is not UTF-8: the first bad byte and its line, and the fix."""
    bad, reason, where = cause.object[cause.start : cause.start + 1], cause.reason, ""
    with file.open("rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as found:
                bad, reason, where = found.object[found.start : found.start + 1], found.reason, f" on line {number}"
                break
    return FinetuneError(
        f"{key}: {path} is not valid UTF-8 (byte {bad!r}{where}: {reason}); " + _utf8_fix(file, "latin1")
    )


@functools.lru_cache(maxsize=8)  # a file is read for detection, then loaded; keyed by mtime and size
def _first_bad_utf8(path: str, mtime_ns: int, size: int) -> Optional[UnicodeDecodeError]:
    """The error of the first byte of ``path`` that is not UTF-8 (a byte-order mark is), or None."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    with open(path, "rb") as f:
        try:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            return error
    return None


def _sample(file: Path) -> Tuple[str, bool]:
    """The first ``SAMPLE_BYTES`` of ``file`` as text (a bad byte replaced: reading reports it), and whether
    there is more (the last line of the sample is then cut)."""
    with file.open("rb") as f:
        data = f.read(SAMPLE_BYTES + 1)
    truncated = len(data) > SAMPLE_BYTES
    return data[:SAMPLE_BYTES].decode("utf-8-sig", errors="replace"), truncated


def _records(sample: str, truncated: bool, separator: str, quoting: int) -> List[List[str]]:
    """The non-empty records of ``sample`` as ``csv`` reads them; the last one dropped if the sample is cut."""
    if quoting == csv.QUOTE_NONE:
        reader_ = csv.reader(io.StringIO(sample, newline=""), delimiter=separator, quoting=csv.QUOTE_NONE)
    else:
        reader_ = csv.reader(io.StringIO(sample, newline=""), delimiter=separator)
    try:
        rows = [row for row in reader_ if row]
    except csv.Error:  # e.g. a field over csv's size limit: nothing to detect from
        return []
    return rows[:-1] if truncated and len(rows) > 1 else rows


def _csv_separator(sample: str, truncated: bool, expected: Optional[int] = None) -> str:
    """The separator of a CSV file, from its first records (quotes respected): the one that splits the header
    line into several columns and every record into as many, ``,`` first; ``expected`` columns (a file
    without a header) break ties. ``,`` when none does."""
    records = {sep: _records(sample, truncated, sep, csv.QUOTE_MINIMAL) for sep in CSV_SEPARATORS}
    width = {sep: len(rows[0]) if rows else 0 for sep, rows in records.items()}
    consistent = [
        sep for sep in CSV_SEPARATORS if width[sep] > 1 and all(len(row) == width[sep] for row in records[sep])
    ]
    if expected:
        consistent = [sep for sep in consistent if width[sep] == expected] or consistent
    if consistent:
        return "," if "," in consistent else max(consistent, key=lambda sep: width[sep])
    if width[","] > 1:
        return ","  # uneven: pandas names the bad line
    widest = max(CSV_SEPARATORS, key=lambda sep: width[sep])
    return widest if width[widest] > 1 else ","


def _tsv_is_quoted(sample: str, truncated: bool) -> bool:
    """Whether a TSV file's fields are CSV-quoted, from its first lines.

    Quoted when its fields read as a CSV writer quotes them (a ``"`` only at the start of a field that ends
    with one, ``""`` inside), with evidence of it (a quoted field holding a tab, a line break or ``""``, or
    every field of the header or first data line quoted), and when so read every record is as wide. A ``"``
    inside GLUE's unquoted text (``he said "hi``; ``"open`` with no closing quote) is not CSV quoting.
    """
    if '"' not in sample:
        return False
    evidence, all_quoted, line_quoted = False, [], True  # all_quoted: per complete line, every field quoted
    i, n = 0, len(sample)
    while i < n:  # at the start of a field
        if sample[i] == '"':
            j, escaped = i + 1, False
            while True:
                k = sample.find('"', j)
                if k >= 0 and sample.startswith('""', k):
                    escaped, j = True, k + 2
                    continue
                break
            if k < 0:
                if truncated:
                    break  # cut off inside a quoted field: decide on what came before
                return False  # never closed: a stray quote
            if k + 1 < n and sample[k + 1] not in "\t\r\n":
                return False  # a closing quote followed by more text: not CSV quoting
            content = sample[i + 1 : k]
            evidence = evidence or escaped or "\t" in content or "\n" in content
            i = k + 1
            if i < n and sample[i] == "\r":
                i += 1
        else:
            k = i
            while k < n and sample[k] not in "\t\n":
                k += 1
            if '"' in sample[i:k]:
                return False  # a quote inside an unquoted field: GLUE's text
            line_quoted = False
            i = k
        if i < n and sample[i] == "\n":
            all_quoted.append(line_quoted)
            line_quoted = True
        i += 1  # past the tab or the line break
    if not (evidence or any(all_quoted[:2])):
        return False
    return len({len(row) for row in _records(sample, truncated, "\t", csv.QUOTE_MINIMAL)}) == 1


def _read_excel(file: Path, key: str, split: str, column_names: Optional[List[str]], text_fields: Sequence[str]) -> Any:
    """The first sheet of an Excel workbook, read with openpyxl (the ``excel`` extra)."""
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        raise FinetuneError(
            f"{key}: reading {file} (Excel) needs openpyxl: pip install '{DISTRIBUTION}[excel]'"
        ) from None
    from datasets import Dataset

    stat = file.stat()
    if stat.st_size == 0:
        raise FinetuneError(f"{key}: {file} has no rows.")
    try:
        frame = _excel_frame(
            str(file.resolve()), stat.st_mtime_ns, stat.st_size, tuple(column_names or ()), tuple(text_fields)
        )
        return Dataset.from_pandas(frame, preserve_index=False, split=split)
    except FinetuneError as error:
        raise FinetuneError(f"{key}: {file} {error}") from None
    except Exception as error:  # not a workbook (zipfile.BadZipFile), a damaged one (openpyxl's, KeyError, ...)
        message = " ".join(str(error).split()) or type(error).__name__
        raise FinetuneError(
            f"{key}: could not read {file} as Excel ({file.suffix}): {message}; save it from Excel as .xlsx or .csv."
        ) from error


@functools.lru_cache(maxsize=4)  # a file is read for detection, then loaded: openpyxl is slow; keyed by mtime and size
def _excel_frame(
    path: str, mtime_ns: int, size: int, column_names: Tuple[str, ...], text_fields: Tuple[str, ...]
) -> Any:
    """The first sheet as a DataFrame (cached: not to be changed). Words stay text ("NA", "null"), whole
    numbers stay integers, and a column that mixes numbers and text is all text (as a CSV file's would be)."""
    import pandas as pd

    with pd.ExcelFile(path, engine="openpyxl") as workbook:
        sheets = workbook.sheet_names
        if len(sheets) > 1:
            _note(f"{path}: reading its first sheet '{sheets[0]}' of {len(sheets)}")
        options: Dict[str, Any] = {"sheet_name": 0, "keep_default_na": False, "na_filter": False}
        if column_names:
            first = pd.read_excel(workbook, header=None, nrows=1, dtype=str, **options)
            header = [str(cell).strip() for cell in (first.iloc[0] if len(first) else [])]
            if not (text_fields and set(text_fields) <= set(header)):
                options.update(header=None, names=list(column_names))
        frame = pd.read_excel(workbook, **options)
    if len(frame) == 0:
        raise FinetuneError("has no rows.")
    frame.columns = [str(column) for column in frame.columns]
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object and len({type(v) for v in values if v is not None and v != ""}) > 1:
            frame[column] = [_cell_text(v) for v in values]
        elif isinstance(values.dtype, pd.StringDtype):
            frame[column] = values.astype(object)  # Arrow's string, as the CSV reader gives, not large_string
    return frame


def _cell_text(value: Any) -> str:
    """A cell as text, as a CSV file would hold it: 3 not 3.0, an empty cell empty."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
