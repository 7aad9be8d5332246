"""Classify text with a trained run: from Python (``Predictor``) or the shell.

    python -m finetune.predict outputs/<run> "The new graphics card from Nvidia is a major breakthrough"
    python -m finetune.predict outputs/<run> "A man plays guitar." --text-pair "Someone makes music."
    python -m finetune.predict outputs/<run> --input test.csv --output predictions.csv

    python -m finetune.predict outputs/<run> --backend onnx "..."   # the run's ONNX export (python -m finetune.export)

Texts are tokenized once, sorted by length and batched, so each batch pads only to its own
longest text; the model runs under ``torch.inference_mode``, with half-precision autocast
on a GPU and bf16 autocast on CPUs that compute bf16 natively, or, with ``--backend onnx``,
in ONNX Runtime without importing PyTorch. Results come back in input order.
A file is read, predicted and written a chunk of rows at a time (``--chunk-rows``), so its
length does not change the memory needed; it is checked whole before the model loads.
"""

import argparse
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from finetune.config import FinetuneError
from finetune.files import replaced_atomically, write_json
from finetune.kinds import TaskKind, kind_for_model

Text = Union[str, Tuple[str, str]]  # a text, or a (first, second) pair
Output = Any  # what the task's kind returns for one text: ranked labels, labels above thresholds, or {"score": x}
EXPORT_INFO = "export.json"  # marks an export folder (python -m finetune.export): what it holds and how it was checked
EXPORT_DIR = "export"  # a run's default export folder
BACKENDS = ("torch", "onnx")


@dataclass
class RunInfo:
    """What a run folder says about its task; defaults for a plain model folder."""

    model_dir: Path
    text_fields: List[str] = field(default_factory=lambda: ["text"])
    label_field: str = "label"
    max_length: Optional[int] = None  # the length the model was trained with
    metrics: List[str] = field(default_factory=list)  # the task's metrics; empty: the kind's defaults
    label_separator: str = ","
    column_names: Optional[List[str]] = None  # how the task's files were read
    quoted: bool = False
    rename_columns: Dict[str, str] = field(default_factory=dict)
    export_dir: Optional[Path] = None  # the ONNX export: the folder itself, or the run's export/

    def task_settings(self) -> Dict[str, Any]:
        """How the task reads and scores its files, as an export folder records it."""
        return {k: v for k, v in asdict(self).items() if k not in ("model_dir", "export_dir")}


def locate(path: Union[str, Path]) -> RunInfo:
    """Accept a run folder (uses its model/ and saved config), a model folder, or an export folder."""
    from omegaconf import OmegaConf

    path = Path(path).expanduser()
    if not path.is_dir():
        raise FinetuneError(f"No such folder: {path}")
    if (path / EXPORT_INFO).is_file():  # an export folder carries the task settings of the run it came from
        saved = json.loads((path / EXPORT_INFO).read_text(encoding="utf-8"))
        return RunInfo(path, export_dir=path, **saved["task"])
    model_dir = path / "model" if (path / "model" / "config.json").is_file() else path
    if not (model_dir / "config.json").is_file():
        raise FinetuneError(f"{path} holds no model: expected a run folder with model/, or a folder with config.json and weights.")
    info = RunInfo(model_dir)
    saved = path / ".hydra" / "config.yaml"
    if model_dir != path and saved.is_file():
        task = OmegaConf.load(saved).task
        info.text_fields, info.label_field, info.max_length = list(task.text_fields), task.label_field, task.max_length
        info.metrics, info.label_separator = list(task.get("metrics") or []), task.get("label_separator", ",")
        info.column_names, info.quoted = task.get("column_names"), task.get("quoted", False)
        info.rename_columns = dict(task.get("rename_columns") or {})
    if (path / EXPORT_DIR / EXPORT_INFO).is_file():
        info.export_dir = path / EXPORT_DIR
    return info


def require_onnx() -> None:
    """Stop with the install command when the optional ONNX packages are missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise FinetuneError(f"ONNX export and serving need {' and '.join(missing)}: pip install 'finetune[onnx]'")


def default_threads() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class TorchModel:
    """A PyTorch model as the Predictor runs it: padded batches in, logits (numpy) out."""

    backend, tensors = "torch", "pt"
    token_type_ids = None  # the model's own tokenizer knows whether the model takes them

    def __init__(self, model, precision: str = "auto"):
        import torch

        from finetune.hardware import resolve_precision

        self.model = model.eval()
        self.config, self.folder = model.config.to_dict(), None
        self.num_labels = model.config.num_labels
        self.precision = resolve_precision(precision, model.device.type == "cuda", "--precision")
        # Autocast runs the matrix products in half precision and leaves the weights as they
        # are, so a model shared with a Trainer (or saved later) is not changed.
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.threads = torch.get_num_threads()

    def describe(self) -> str:
        device = self.model.device.type
        return f"PyTorch on {device.upper()}, {self.precision}" + (f", {self.threads} threads" if device == "cpu" else "")

    def __call__(self, batch: Dict[str, Any]):
        import torch

        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        autocast = torch.autocast(self.model.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)
        with torch.inference_mode(), autocast:
            return self.model(**batch).logits.float().cpu().numpy()


class OnnxModel:
    """An exported model (``model.onnx``) in ONNX Runtime on the CPU; imports no PyTorch."""

    backend, tensors = "onnx", "np"

    def __init__(self, export_dir: Path, threads: Optional[int] = None):
        require_onnx()
        import onnxruntime

        self.export_dir = export_dir
        self.info = json.loads((export_dir / EXPORT_INFO).read_text(encoding="utf-8"))
        self.precision = self.info["precision"]
        self.config, self.folder = json.loads((export_dir / "config.json").read_text(encoding="utf-8")), export_dir
        self.threads = threads or default_threads()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1  # one graph at a time: its operators run in sequence
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        self.session = onnxruntime.InferenceSession(str(export_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]  # the exporter drops inputs a model ignores
        self.num_labels = self.session.get_outputs()[0].shape[1]
        # BERT's segment ids for pairs: asked of the tokenizer only where the model takes them, as the
        # generic tokenizer an export is read with does not know the model's input names.
        self.token_type_ids = "token_type_ids" in self.inputs

    def describe(self) -> str:
        return f"ONNX Runtime on CPU, {self.precision} ({self.export_dir / 'model.onnx'}), {self.threads} threads"

    def __call__(self, batch: Dict[str, Any]):
        return self.session.run(None, {name: batch[name].astype("int64") for name in self.inputs})[0]


def saved_kind(info: RunInfo) -> TaskKind:
    """The task kind of the model in ``info.model_dir``, read without loading the model."""
    config = json.loads((info.model_dir / "config.json").read_text(encoding="utf-8"))
    return kind_for_model(config, info.model_dir, info.metrics, info.label_separator)


class Predictor:
    """A fine-tuned model: call it on a text, a (first, second) pair, or a list of either.

    What it returns per text is the task kind's: labels ranked by probability (single-label),
    the labels above their thresholds (multi-label), or ``{"score": x}`` (regression).
    """

    def __init__(self, model, tokenizer, kind: Optional[TaskKind] = None, batch_size: int = 64, max_length: Optional[int] = None, precision: str = "auto"):
        """``model``: a PyTorch model, or an ``OnnxModel`` (whose precision was fixed when it was exported)."""
        self.runner = model if isinstance(model, OnnxModel) else TorchModel(model, precision)
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.kind = kind or kind_for_model(self.runner.config, self.runner.folder)
        self.max_length = max_length or min(tokenizer.model_max_length, 512)
        self.labels = self.kind.label_names
        self.precision, self.threads, self.backend = self.runner.precision, self.runner.threads, self.runner.backend

    def describe(self) -> str:
        """Where and how the model runs: backend, device, precision, threads."""
        return self.runner.describe()

    @classmethod
    def load(cls, path: Union[str, Path], device: Optional[str] = None, backend: Optional[str] = None, threads: Optional[int] = None,
             **options: Any) -> "Predictor":
        """Load from a run folder, a model folder or an export folder; ``device`` defaults to CUDA when present.

        ``backend``: ``torch`` (the default for a run or model folder) or ``onnx`` (the default for
        an export folder; a run folder uses its ``export/``). ``threads``: intra-op threads
        (default: the CPUs this process may use for ONNX, PyTorch's own choice for torch).
        """
        info = locate(path)
        backend = backend or ("onnx" if info.export_dir == info.model_dir else "torch")
        if backend not in BACKENDS:
            raise FinetuneError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}.")
        kind = saved_kind(info)
        options["max_length"] = options.get("max_length") or info.max_length
        if backend == "onnx":
            predictor = cls(*_load_export(info, path, device, threads, options), kind=kind, **options)
        else:
            predictor = cls(*_load_torch(info, path, device, threads), kind=kind, **options)
        predictor.info = info
        return predictor

    def __call__(self, texts: Union[Text, Sequence[Text]], top_k: Optional[int] = None) -> Union[Output, List[Output]]:
        """The kind's output for one input, or a list of them for a list of inputs."""
        single = isinstance(texts, (str, tuple))
        scores = self.scores([texts] if single else list(texts))
        results = [self.kind.output(row, top_k) for row in scores]
        return results[0] if single else results

    def scores(self, texts: Sequence[Text], progress: bool = False):
        """Probabilities per class (or the predicted value), one row per input, in input order."""
        return self.kind.scores(self.logits(texts, progress))

    def logits(self, texts: Sequence[Text], progress: Any = False):
        """The model's raw outputs, one row per input, in input order (a numpy array).

        ``progress``: True shows a bar of batches; a tqdm bar given here is advanced by rows.
        """
        import numpy as np
        from tqdm.auto import tqdm

        width = self.runner.num_labels
        if not texts:
            return np.zeros((0, width), dtype=np.float32)
        pairs = [t for t in texts if not isinstance(t, str)]
        if pairs and len(pairs) != len(texts):
            raise FinetuneError("Mix of single texts and pairs in one call: classify them separately.")
        columns = list(zip(*texts)) if pairs else [list(texts)]
        encoded = self.tokenizer(*columns, truncation=True, max_length=self.max_length, return_token_type_ids=self.runner.token_type_ids)
        order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
        result = np.empty((len(texts), width), dtype=np.float32)
        starts = range(0, len(order), self.batch_size)
        outer = None if isinstance(progress, bool) else progress
        for start in tqdm(starts, desc="Predicting", unit="batch", disable=progress is not True):
            rows = order[start : start + self.batch_size]
            # Lengths rounded up to a multiple of 8: the CPU's bf16 kernels are built and cached per
            # shape, and one per exact length made memory creep up over a long file.
            batch = self.tokenizer.pad([{k: encoded[k][i] for k in encoded} for i in rows], return_tensors=self.runner.tensors, pad_to_multiple_of=8)
            result[rows] = self.runner(batch)
            if outer is not None:
                outer.update(len(rows))
        return result


def _load_torch(info: RunInfo, path: Union[str, Path], device: Optional[str], threads: Optional[int]):
    """The PyTorch model and tokenizer of a run or model folder."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if info.export_dir == info.model_dir:
        raise FinetuneError(f"{path} holds an ONNX export, not a PyTorch model: use --backend onnx (backend='onnx'), or give the run folder.")
    if threads:
        torch.set_num_threads(threads)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        tokenizer = AutoTokenizer.from_pretrained(info.model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(info.model_dir).to(device)
    except (OSError, ValueError) as error:
        raise FinetuneError(f"Could not load the model in {info.model_dir}: {error}") from error
    return model, tokenizer


def _load_export(info: RunInfo, path: Union[str, Path], device: Optional[str], threads: Optional[int], options: Dict[str, Any]):
    """The ONNX model and tokenizer of an export folder (or a run's export/), without PyTorch."""
    # The generic fast tokenizer reads tokenizer.json as the model's own class wrote it, and
    # unlike AutoTokenizer it does not import PyTorch.
    from transformers import PreTrainedTokenizerFast

    if info.export_dir is None:
        raise FinetuneError(f"{path} has no ONNX export ({EXPORT_DIR}/{EXPORT_INFO}): create one with python -m finetune.export {path}")
    if device not in (None, "cpu"):
        raise FinetuneError(f"--device {device}: the ONNX backend runs on the CPU; drop --device, or use --backend torch.")
    if options.pop("precision", "auto") not in ("auto", None):
        raise FinetuneError("--precision applies to --backend torch; an ONNX export's precision is chosen when exporting (--quantize int8).")
    model = OnnxModel(info.export_dir, threads)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(info.export_dir)
    tokenizer.padding_side = model.info["padding_side"]  # XLNet pads on the left; the generic class does not know
    return model, tokenizer


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


def read_chunks(path: Path, info: Optional[RunInfo] = None, rows: int = CHUNK_ROWS) -> Iterator[Any]:
    """A CSV, TSV, JSON / JSONL or Parquet file as pandas DataFrames of ``rows`` rows each, read as the run's task reads its files.

    Only a JSON array (one value) is read whole; every other format is read ``rows`` at a time.
    """
    import pandas as pd

    from finetune.data import reader

    info = info or RunInfo(Path("."))
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
    except (pd.errors.EmptyDataError, ValueError, UnicodeDecodeError, OSError) as error:  # pyarrow's errors are ValueErrors
        raise FinetuneError(f"--input: could not read {path}: {one_line_error(error)}") from error
    if empty:
        raise FinetuneError(f"--input: {path} has no rows.")


def one_line_error(error: Exception) -> str:
    return " ".join(str(error).split())[:300]


def read_table(path: Path, info: Optional[RunInfo] = None):
    """A whole CSV, TSV, JSON / JSONL or Parquet file as one pandas DataFrame (``read_chunks`` streams it)."""
    import pandas as pd

    return pd.concat(list(read_chunks(path, info)), ignore_index=True)


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
    import csv

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
                    raise FinetuneError(f"--output {path}: a column changes type between rows ({one_line_error(error)}); write .csv or .jsonl instead.") from error
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


def parsed_labels(values: Sequence[Any], kind: TaskKind, first_row: int = 0) -> List[Any]:
    """The labels of a label column as the kind reads them; an invalid value names its row."""
    labels = []
    for row, value in enumerate(values, start=first_row):
        label = kind.parse(value)
        if label is None:
            raise FinetuneError(f"--input row {row + 1}: label {value!r} is {kind.expected()}.")
        labels.append(label)
    return labels


@dataclass
class InputFile:
    """An --input file, checked: its rows, and whether it has the task's label column."""

    path: Path
    info: RunInfo
    kind: TaskKind
    rows: int
    labeled: bool
    chunk_rows: int = CHUNK_ROWS

    def chunks(self) -> Iterator[Tuple[int, Any]]:
        """(first row, DataFrame) for each chunk, in file order."""
        first = 0
        for chunk in read_chunks(self.path, self.info, self.chunk_rows):
            yield first, chunk
            first += len(chunk)


def check_input(input_path: Path, path: Union[str, Path], chunk_rows: int = CHUNK_ROWS) -> InputFile:
    """Read ``input_path`` once, a chunk at a time, before any model loads: columns, labels, rows.

    A bad label on row 900,000 is reported before the prediction starts, not after.
    """
    info = locate(path)
    kind = saved_kind(info)
    rows, labeled = 0, False
    for chunk in read_chunks(input_path, info, chunk_rows):
        missing = [f for f in info.text_fields if f not in chunk.columns]
        if missing:
            raise FinetuneError(f"--input {input_path} has no column {', '.join(map(repr, missing))}; its columns are {list(chunk.columns)}.")
        if rows == 0:
            labeled = info.label_field in chunk.columns
        if labeled:
            if info.label_field not in chunk.columns:
                raise FinetuneError(f"--input {input_path}: rows {rows + 1} to {rows + len(chunk)} have no '{info.label_field}' (the rows before them have).")
            parsed_labels(chunk[info.label_field].tolist(), kind, first_row=rows)
        rows += len(chunk)
    return InputFile(input_path, info, kind, rows, labeled, chunk_rows)


def check_output(output_path: Path, input_path: Optional[Path], overwrite: bool) -> None:
    """Refuse an --output that would destroy a file: the input itself, or any existing file without --overwrite."""
    output_suffix(output_path)
    if output_path.is_dir():
        raise FinetuneError(f"--output {output_path} is a folder; give a file name, e.g. {output_path / 'predictions.csv'}.")
    if not output_path.exists():
        return
    if input_path is not None and input_path.exists() and output_path.resolve() == input_path.resolve():
        raise FinetuneError(f"--output {output_path} is the --input file; write the predictions into another file.")
    if not overwrite:
        raise FinetuneError(f"--output {output_path} exists; add --overwrite to replace it, or choose another file.")


def predict_file(predictor: Predictor, source: InputFile, output_path: Path, all_scores: bool) -> Optional[Dict[str, Any]]:
    """Write each row of ``source`` with the kind's prediction columns, a chunk at a time; return the task's metrics if it has labels.

    Rows keep their input order (within a chunk the model sees them sorted by length). Only
    what the metrics need is kept across chunks: each row's label and logits, a few numbers.
    """
    import numpy as np
    from tqdm.auto import tqdm

    kind, info = predictor.kind, source.info
    truth, logits_seen = [], []
    with table_writer(output_path) as write, tqdm(total=source.rows, desc="Predicting", unit=" rows") as bar:
        for first, frame in source.chunks():
            columns = [frame[f].astype(str).tolist() for f in info.text_fields]
            logits = predictor.logits(columns[0] if len(columns) == 1 else list(zip(*columns)), progress=bar)
            scores = kind.scores(logits)
            for name, values in kind.output_columns(scores).items():
                frame[name] = values
            if all_scores and scores.ndim == 2:
                for i, label in enumerate(kind.label_names):
                    frame[f"score_{label}"] = scores[:, i]
            write(frame)
            if source.labeled:
                truth.append(np.array(parsed_labels(frame[info.label_field].tolist(), kind, first_row=first)))
                logits_seen.append(logits)
    if not source.labeled:
        return None
    metrics = kind.report(np.concatenate(truth), np.concatenate(logits_seen))
    write_json(output_path.with_name(output_path.stem + ".metrics.json"), metrics)
    return metrics


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1, else the parser's error (usage and one line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m finetune.predict", description="Predict with a trained run or model folder: classes, labels or scores.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("path", help="a run folder (uses its model/ and task settings) or a model folder")
    parser.add_argument("text", nargs="?", help="a text to classify")
    parser.add_argument("--text-pair", help="the second text of a pair (premise TEXT, hypothesis --text-pair)")
    parser.add_argument("--input", type=Path, help="a CSV, TSV, JSON/JSONL or Parquet file to classify, row by row")
    parser.add_argument("--output", type=Path, help="where to write --input's rows with the predictions (label and score, labels, or score)")
    parser.add_argument("--all-scores", action="store_true", help="with --output: a score_<label> column per class")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists (never the --input file)")
    parser.add_argument("--chunk-rows", type=positive_int, default=CHUNK_ROWS,
                        help=f"rows read, predicted and written at a time (default {CHUNK_ROWS}): memory does not grow with the file")
    parser.add_argument("--top-k", type=positive_int, default=None, help="labels to print per text (default: all)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--max-length", type=positive_int, default=None, help="tokens per text (default: the model's limit, at most 512)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when present)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                        help="auto: half precision on GPUs, bf16 on CPUs with native bf16, else fp32 (torch backend)")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="torch, or onnx: the run's export/ (python -m finetune.export), without PyTorch "
                             "(default: onnx for an export folder, else torch)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="intra-op CPU threads (default: the CPUs this process may use for onnx, PyTorch's choice for torch)")
    args = parser.parse_args(argv)
    if (args.text is None) == (args.input is None):
        parser.error("give either a TEXT or --input FILE")
    if args.input is not None and args.output is None:
        parser.error("--input needs --output FILE")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        source = None
        if args.input is not None:  # every check on the files before the model loads
            check_output(args.output, args.input, args.overwrite)
            source = check_input(args.input, args.path, args.chunk_rows)
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # "Loading weights" bars: noise on a command line
        predictor = Predictor.load(args.path, device=args.device, backend=args.backend, threads=args.threads,
                                   batch_size=args.batch_size, max_length=args.max_length, precision=args.precision)
        print(f"Model: {predictor.describe()}", file=sys.stderr)
        if source is None:
            text: Text = (args.text, args.text_pair) if args.text_pair is not None else args.text
            print(rounded(predictor(text, top_k=args.top_k)))
            return 0
        metrics = predict_file(predictor, source, args.output, args.all_scores)
    except FinetuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {source.rows} rows to {args.output}")
    if metrics is not None:
        scores = "  ".join(f"{name} {metrics[name]:.4f}" for name in predictor.kind.metrics)
        print(f"{scores}  on {metrics['rows']} labeled rows")
        for name, row in (metrics.get("per_class") or {}).items():
            print(f"  {name:<20} " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"n={v}" for k, v in row.items()))
        print(f"Metrics and per-class report: {args.output.with_name(args.output.stem + '.metrics.json')}")
    return 0


def rounded(value: Any) -> Any:
    """Scores to 3 decimals, for printing."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


if __name__ == "__main__":
    sys.exit(main())
