"""Tables in and out of the predict command: CSV, TSV, JSON / JSONL and Parquet, streamed a chunk at a time."""

import csv
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

from finetune.errors import FinetuneError, one_line
from finetune.files import replaced_atomically
from finetune.runs.model_folder import ModelRecord

CHUNK_ROWS = 10_000  # rows read, predicted and written at a time: a file of any length needs the memory of one chunk
OUTPUT_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


def _is_json_array(path: Path) -> bool:
    """Whether a .json file holds one array (read whole) rather than one record per line (streamed)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        while True:
            block = f.read(65536)
            if not block:
                return False
            stripped = block.lstrip().lstrip("\ufeff")
            if stripped:
                return stripped[0] == "["


def read_chunks(path: Path, record: Optional[ModelRecord] = None, rows: int = CHUNK_ROWS) -> Iterator[Any]:
    """A CSV, TSV, JSON / JSONL or Parquet file as DataFrames of ``rows`` rows each, read as the run's task reads it.

    Only a JSON array (one value) is read whole; every other format is read ``rows`` at a time.
    """
    import pandas as pd

    from finetune.tasks.formats import reader

    info = record or ModelRecord(kind="", labels=[])  # a plain model folder: the default columns
    if not path.is_file():
        raise FinetuneError(f"--input: no such file: {path}")
    if path.stat().st_size == 0:
        raise FinetuneError(f"--input: {path} is empty.")
    builder, options = reader(path, "--input", info.column_names, info.quoted, info.text_fields)
    renames = dict(info.rename_columns)
    empty = True
    try:
        if builder == "csv":  # the same reader options as training data: TSV unquoted, no NaN words, header or not
            chunks: Iterator[Any] = pd.read_csv(path, chunksize=rows, **options)
        elif builder == "json" and _is_json_array(path):
            whole = pd.read_json(path)
            chunks = (whole.iloc[start : start + rows].copy() for start in range(0, len(whole), rows))
        elif builder == "json":
            chunks = pd.read_json(path, lines=True, chunksize=rows)
        else:
            import pyarrow.parquet as pq

            chunks = (batch.to_pandas() for batch in pq.ParquetFile(path).iter_batches(batch_size=rows))
        for chunk in chunks:
            if len(chunk):
                empty = False
                yield chunk.rename(columns={old: new for old, new in renames.items() if new not in chunk.columns})
    except (
        pd.errors.EmptyDataError,
        ValueError,
        UnicodeDecodeError,
        OSError,
    ) as error:  # pyarrow's errors are ValueErrors
        raise FinetuneError(f"--input: could not read {path}: {one_line(str(error), 300)}") from error
    if empty:
        raise FinetuneError(f"--input: {path} has no rows.")


def output_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise FinetuneError(f"--output: cannot write '{suffix}' files; use .csv, .tsv, .json, .jsonl or .parquet.")
    return suffix


@contextmanager
def table_writer(path: Path) -> Iterator[Callable[[Any], None]]:
    """A function that appends a DataFrame's rows to ``path``; the file appears, complete, when the block ends.

    CSV and TSV get one header line; JSON one array; Parquet one row group per call, with the
    first call's column types.
    """
    suffix = output_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            parquet: Dict[str, Any] = {}

            def write(frame) -> None:
                try:
                    table = pa.Table.from_pandas(frame, schema=parquet.get("schema"), preserve_index=False)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
                    raise FinetuneError(
                        f"--output {path}: a column changes type between rows ({one_line(str(error), 300)}); "
                        "write .csv or .jsonl instead."
                    ) from error
                if "writer" not in parquet:
                    parquet.update(schema=table.schema, writer=pq.ParquetWriter(tmp, table.schema))
                parquet["writer"].write_table(table)

            try:
                yield write
            finally:
                if "writer" in parquet:
                    parquet["writer"].close()
            return
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            first = True

            def write(frame) -> None:
                nonlocal first
                if suffix == ".csv":
                    frame.to_csv(handle, index=False, header=first)
                elif suffix == ".tsv":
                    frame.to_csv(handle, sep="\t", index=False, header=first, quoting=csv.QUOTE_NONE, escapechar="\\")
                elif suffix == ".jsonl":
                    handle.write(frame.to_json(orient="records", lines=True, force_ascii=False).rstrip("\n") + "\n")
                else:
                    handle.write(("[" if first else ",") + frame.to_json(orient="records", force_ascii=False)[1:-1])
                first = False

            yield write
            if suffix == ".json":
                handle.write("[]" if first else "]")


def write_table(frame, path: Path) -> None:
    """Write a whole DataFrame, as ``table_writer`` writes each chunk."""
    with table_writer(path) as write:
        write(frame)
