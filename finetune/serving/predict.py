"""``python -m finetune.predict``: classify texts, or a file row by row, with a trained run.

    python -m finetune.predict outputs/<run> "The new graphics card from Nvidia is a major breakthrough"
    python -m finetune.predict outputs/<run> "A man plays guitar." --text-pair "Someone makes music."
    python -m finetune.predict outputs/<run> --input test.csv --output predictions.csv

    python -m finetune.predict outputs/<run> --backend onnx "..."   # the run's ONNX export (python -m finetune.export)

A file is read, predicted and written a chunk of rows at a time (``--chunk-rows``), so its
length does not change the memory needed; it is checked whole before the model loads. The columns it adds
are finetune/tasks/vocabulary.py's: ``predicted``, ``confidence``, ``p_<label>`` (``--all-scores``), ``abstained``.

What the command prints on stdout is JSON: the answer for a text, or for a file what it wrote (with the metrics
of a labeled file); the progress and the summary a person reads go to stderr.
"""

import argparse
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from finetune.errors import FinetuneError
from finetune.files import refuse_to_overwrite, write_json
from finetune.inference.answers import rounded
from finetune.inference.predictor import Predictor, Text
from finetune.inference.runners import BACKENDS
from finetune.runs.model_folder import ModelFolder
from finetune.serving.tables import CHUNK_ROWS, output_suffix, read_chunks, table_writer
from finetune.tasks.kind import TaskKind
from finetune.tasks.windows import STRATEGIES


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
    folder: ModelFolder
    kind: TaskKind
    rows: int
    labeled: bool
    chunk_rows: int = CHUNK_ROWS

    def chunks(self) -> Iterator[Tuple[int, Any]]:
        """(first row, DataFrame) for each chunk, in file order."""
        first = 0
        for chunk in read_chunks(self.path, self.folder.record, self.chunk_rows):
            yield first, chunk
            first += len(chunk)


def check_input(input_path: Path, path: Union[str, Path], chunk_rows: int = CHUNK_ROWS) -> InputFile:
    """Read ``input_path`` once, a chunk at a time, before any model loads: columns, labels, rows.

    A bad label on row 900,000 is reported before the prediction starts, not after.
    """
    folder = ModelFolder.open(path)
    info, kind = folder.record, folder.kind()
    rows, labeled = 0, False
    for chunk in read_chunks(input_path, info, chunk_rows):
        missing = [f for f in info.text_fields if f not in chunk.columns]
        if missing:
            raise FinetuneError(
                f"--input {input_path} has no column {', '.join(map(repr, missing))}; "
                f"its columns are {list(chunk.columns)}."
            )
        if rows == 0:
            labeled = info.label_field in chunk.columns
        if labeled:
            if info.label_field not in chunk.columns:
                raise FinetuneError(
                    f"--input {input_path}: rows {rows + 1} to {rows + len(chunk)} have no '{info.label_field}' "
                    "(the rows before them have)."
                )
            parsed_labels(chunk[info.label_field].tolist(), kind, first_row=rows)
        rows += len(chunk)
    return InputFile(input_path, folder, kind, rows, labeled, chunk_rows)


def metrics_path(output_path: Path) -> Path:
    """Where the metrics of a labeled --input go: beside --output, ``<output>.metrics.json``."""
    return output_path.with_name(output_path.stem + ".metrics.json")


def check_output(output_path: Path, input_path: Optional[Path], overwrite: bool, input_option: str = "--input") -> None:
    """Refuse an --output that would destroy a file: the input itself, or, without --overwrite, any existing file
    (the output, or the metrics file beside it)."""
    output_suffix(output_path)
    if output_path.is_dir():
        raise FinetuneError(
            f"--output {output_path} is a folder; give a file name, e.g. {output_path / 'predictions.csv'}."
        )
    if input_path is not None and input_path.exists() and output_path.resolve() == input_path.resolve():
        raise FinetuneError(
            f"--output {output_path} is the {input_option} file; write the predictions into another file."
        )
    refuse_to_overwrite(output_path, overwrite)
    if input_option == "--input":  # the predict command writes a labeled file's metrics beside its output
        refuse_to_overwrite(metrics_path(output_path), overwrite, f"--output {output_path}: its metrics file")


def predict_file(
    predictor: Predictor, source: InputFile, output_path: Path, all_scores: bool
) -> Tuple[Optional[Dict[str, Any]], int]:
    """Write each row of ``source`` with the kind's prediction columns, a chunk at a time; return the task's metrics
    if it has labels (with ``abstention``: the answered rows' metrics and the coverage), and the rows abstained on.

    Rows keep their input order (within a chunk the model sees them sorted by length). Only
    what the metrics need is kept across chunks: each row's label and logits, a few numbers.
    """
    import numpy as np
    from tqdm.auto import tqdm

    kind, info, answers = predictor.kind, source.folder.record, predictor.answers
    truth, logits_seen, abstained = [], [], 0
    with table_writer(output_path) as write, tqdm(total=source.rows, desc="Predicting", unit=" rows") as bar:
        for first, frame in source.chunks():
            columns = [frame[f].astype(str).tolist() for f in info.text_fields]
            logits = predictor.logits(columns[0] if len(columns) == 1 else list(zip(*columns)), progress=bar)
            scores = kind.scores(logits)
            for name, values in answers.columns(scores, all_scores).items():
                frame[name] = values
            abstained += int((~answers.answered(scores)).sum())
            write(frame)
            if source.labeled:
                truth.append(np.array(parsed_labels(frame[info.label_field].tolist(), kind, first_row=first)))
                logits_seen.append(logits)
    if not source.labeled:
        metrics_path(output_path).unlink(missing_ok=True)  # an earlier output's (--overwrite): not this file's
        return None, abstained
    metrics = kind.report(np.concatenate(truth), np.concatenate(logits_seen))
    metrics["long_text"] = {
        **predictor.long_text.as_dict(),
        "tokens": predictor.tokens_scored,
        "windows_per_document": (predictor.windows_scored or source.rows) / max(source.rows, 1),
    }
    if predictor.min_confidence is not None:
        metrics["abstention"] = answers.report(np.concatenate(truth), np.concatenate(logits_seen))
    write_json(metrics_path(output_path), metrics)
    return metrics, abstained


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1, else the parser's error (usage and one line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def add_model_options(parser: argparse.ArgumentParser, threads_help: str, answers: bool = True) -> None:
    """--device, --precision, --backend, --threads and (``answers``) --min-confidence: how the model runs and answers,
    for predict, serve and suggest alike."""
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1, mps, ... (default: CUDA, else Apple silicon's MPS, else the CPU)",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="auto: half precision on GPUs, bf16 on CPUs with native bf16, else fp32 (torch backend)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="torch, or onnx: the run's export/ (python -m finetune.export), without PyTorch "
        "(default: onnx for an export folder, else torch)",
    )
    parser.add_argument("--threads", type=positive_int, default=None, help=threads_help)
    if not answers:
        return
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="abstain below this confidence (0-1): the answer reads '(abstained)', with the confidence and the best "
        "guess; a file with labels reports the answered rows' metrics and the coverage",
    )


def load_predictor(args: argparse.Namespace, **options: Any) -> Predictor:
    """The model of ``args.path`` as the options of ``add_model_options`` (and ``--batch-size``) say, with
    ``options``; where and how it runs printed on stderr."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars: noise on a command line
    predictor = Predictor.load(
        args.path,
        device=args.device,
        backend=args.backend,
        threads=args.threads,
        batch_size=args.batch_size,
        precision=args.precision,
        **options,
    )
    print(f"Model: {predictor.describe()}; long texts: {predictor.long_text.describe()}", file=sys.stderr)
    return predictor


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m finetune.predict",
        description="Predict with a trained run or model folder: classes, labels or scores.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("path", help="a run folder (uses its model/ and task settings) or a model folder")
    parser.add_argument("text", nargs="?", help="a text to classify")
    parser.add_argument("--text-pair", help="the second text of a pair (premise TEXT, hypothesis --text-pair)")
    parser.add_argument("--input", type=Path, help="a CSV, TSV, JSON/JSONL or Parquet file to classify, row by row")
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write --input's rows with the predictions (columns predicted, confidence; "
        "abstained with --min-confidence)",
    )
    parser.add_argument("--all-scores", action="store_true", help="with --output: a p_<label> column per class")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --output (and its .metrics.json) if it exists (never the --input file)",
    )
    parser.add_argument(
        "--chunk-rows",
        type=positive_int,
        default=CHUNK_ROWS,
        help=f"rows read, predicted and written at a time (default {CHUNK_ROWS}): memory does not grow with the file",
    )
    parser.add_argument("--top-k", type=positive_int, default=None, help="labels to print per text (default: all)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="tokens per text (default: the run's task.max_length; a plain model folder: its limit, at most 512)",
    )
    parser.add_argument(
        "--long-text",
        choices=STRATEGIES,
        default=None,
        help="how to read texts longer than --max-length: truncate, head_tail or chunks "
        "(default: as the run was trained)",
    )
    add_model_options(
        parser, "intra-op CPU threads (default: the CPUs this process may use for onnx, PyTorch's choice for torch)"
    )
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
        predictor = load_predictor(
            args, max_length=args.max_length, long_text=args.long_text, min_confidence=args.min_confidence
        )
        if source is None:
            text: Text = (args.text, args.text_pair) if args.text_pair is not None else args.text
            print(json.dumps(rounded(predictor(text, top_k=args.top_k)), ensure_ascii=False))
            return 0
        metrics, abstained = predict_file(predictor, source, args.output, args.all_scores)
    except FinetuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = {
        "output": str(args.output),
        "rows": source.rows,
        "abstained": abstained if args.min_confidence is not None else None,
        "metrics_file": str(metrics_path(args.output)) if metrics is not None else None,
        "metrics": metrics,
    }
    print(json.dumps(summary, ensure_ascii=False))
    describe_file_result(args, predictor.kind.metrics, source.rows, metrics, abstained)
    return 0


def describe_file_result(args: argparse.Namespace, names, rows: int, metrics, abstained: int) -> None:
    """What a file's prediction did, for a person (stderr): rows written, abstentions, the metrics."""
    say = functools.partial(print, file=sys.stderr)
    say(f"Wrote {rows} rows to {args.output}")
    if args.min_confidence is not None:
        say(
            f"Abstained on {abstained} of {rows} rows (confidence below {args.min_confidence:g}): "
            f"coverage {1 - abstained / max(rows, 1):.4f}"
        )
    if metrics is None:
        return
    say(f"{'  '.join(f'{name} {metrics[name]:.4f}' for name in names)}  on {metrics['rows']} labeled rows")
    answered = (metrics.get("abstention") or {}).get("on_answered")
    if answered:
        say(
            "  ".join(f"{name} {answered[name]:.4f}" for name in names)
            + f"  on the {metrics['abstention']['answered']} answered rows"
        )
    for name, row in (metrics.get("per_class") or {}).items():
        say(f"  {name:<20} " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"n={v}" for k, v in row.items()))
    say(f"Metrics and per-class report: {metrics_path(args.output)}")


if __name__ == "__main__":
    sys.exit(main())
