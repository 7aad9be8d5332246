"""Classify text with a trained run: from Python (``Predictor``) or the shell.

    python -m finetune.predict outputs/<run> "The new graphics card from Nvidia is a major breakthrough"
    python -m finetune.predict outputs/<run> "A man plays guitar." --text-pair "Someone makes music."
    python -m finetune.predict outputs/<run> --input test.csv --output predictions.csv

Texts are tokenized once, sorted by length and batched, so each batch pads only to its own
longest text; the model runs under ``torch.inference_mode``, with half-precision autocast
on a GPU and bf16 autocast on CPUs that compute bf16 natively. Results come back in input order.
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from finetune.config import FinetuneError
from finetune.files import replaced_atomically, write_json
from finetune.kinds import TaskKind, kind_for_model

Text = Union[str, Tuple[str, str]]  # a text, or a (first, second) pair
Output = Any  # what the task's kind returns for one text: ranked labels, labels above thresholds, or {"score": x}


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


def locate(path: Union[str, Path]) -> RunInfo:
    """Accept a run folder (uses its model/ and saved config) or a model folder."""
    from omegaconf import OmegaConf

    path = Path(path).expanduser()
    if not path.is_dir():
        raise FinetuneError(f"No such folder: {path}")
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
    return info


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
        import torch

        from finetune.hardware import resolve_precision

        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.kind = kind or kind_for_model(model.config.to_dict())
        self.max_length = max_length or min(tokenizer.model_max_length, 512)
        self.labels = self.kind.label_names
        self.precision = precision = resolve_precision(precision, model.device.type == "cuda", "--precision")
        # Autocast runs the matrix products in half precision and leaves the weights as they
        # are, so a model shared with a Trainer (or saved later) is not changed.
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    @classmethod
    def load(cls, path: Union[str, Path], device: Optional[str] = None, **options: Any) -> "Predictor":
        """Load from a run folder or a model folder; ``device`` defaults to CUDA when present."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        info = locate(path)
        kind = saved_kind(info)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            tokenizer = AutoTokenizer.from_pretrained(info.model_dir)
            model = AutoModelForSequenceClassification.from_pretrained(info.model_dir).to(device)
        except (OSError, ValueError) as error:
            raise FinetuneError(f"Could not load the model in {info.model_dir}: {error}") from error
        options["max_length"] = options.get("max_length") or info.max_length
        predictor = cls(model, tokenizer, kind=kind, **options)
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

    def logits(self, texts: Sequence[Text], progress: bool = False):
        """The model's raw outputs, one row per input, in input order (a numpy array)."""
        import numpy as np
        import torch
        from tqdm.auto import tqdm

        width = self.model.config.num_labels
        if not texts:
            return np.zeros((0, width), dtype=np.float32)
        pairs = [t for t in texts if not isinstance(t, str)]
        if pairs and len(pairs) != len(texts):
            raise FinetuneError("Mix of single texts and pairs in one call: classify them separately.")
        columns = list(zip(*texts)) if pairs else [list(texts)]
        encoded = self.tokenizer(*columns, truncation=True, max_length=self.max_length)
        order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
        result = np.empty((len(texts), width), dtype=np.float32)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="Predicting", unit="batch", disable=not progress):
            rows = order[start : start + self.batch_size]
            batch = self.tokenizer.pad([{k: encoded[k][i] for k in encoded} for i in rows], return_tensors="pt")
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
            autocast = torch.autocast(self.model.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)
            with torch.inference_mode(), autocast:
                result[rows] = self.model(**batch).logits.float().cpu().numpy()
        return result


def read_table(path: Path, info: Optional[RunInfo] = None):
    """A CSV, TSV, JSON / JSONL or Parquet file as a pandas DataFrame, read as the run's task reads its files."""
    import pandas as pd

    from finetune.data import reader

    info = info or RunInfo(Path("."))
    if not path.is_file():
        raise FinetuneError(f"--input: no such file: {path}")
    builder, options = reader(path, "--input", info.column_names, info.quoted, info.text_fields)
    suffix = path.suffix.lower()
    try:
        if builder == "csv":  # the same reader options as training data: TSV unquoted, no NaN words, header or not
            frame = pd.read_csv(path, **options)
        elif builder == "json":
            frame = pd.read_json(path, lines=suffix == ".jsonl" or path.read_text(encoding="utf-8").lstrip()[:1] != "[")
        else:
            frame = pd.read_parquet(path)
    except (pd.errors.EmptyDataError, ValueError, UnicodeDecodeError, OSError) as error:
        if path.stat().st_size == 0:
            raise FinetuneError(f"--input: {path} is empty.") from error
        raise FinetuneError(f"--input: could not read {path}: {error}") from error
    if frame.empty:
        raise FinetuneError(f"--input: {path} has no rows.")
    return frame.rename(columns={old: new for old, new in info.rename_columns.items() if new not in frame.columns})


def write_table(frame, path: Path) -> None:
    import csv

    suffix = path.suffix.lower()
    writers = {
        ".csv": lambda target: frame.to_csv(target, index=False),
        ".tsv": lambda target: frame.to_csv(target, sep="\t", index=False, quoting=csv.QUOTE_NONE, escapechar="\\"),
        ".jsonl": lambda target: frame.to_json(target, orient="records", lines=True, force_ascii=False),
        ".json": lambda target: frame.to_json(target, orient="records", force_ascii=False),
        ".parquet": lambda target: frame.to_parquet(target, index=False),
    }
    if suffix not in writers:
        raise FinetuneError(f"--output: cannot write '{suffix}' files; use .csv, .tsv, .json, .jsonl or .parquet.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        writers[suffix](tmp)


def parsed_labels(values: Sequence[Any], kind: TaskKind) -> List[Any]:
    """The labels of a label column as the kind reads them; an invalid value names its row."""
    labels = []
    for row, value in enumerate(values):
        label = kind.parse(value)
        if label is None:
            raise FinetuneError(f"--input row {row + 1}: label {value!r} is {kind.expected()}.")
        labels.append(label)
    return labels


def read_input(input_path: Path, path: Union[str, Path]):
    """The rows to predict and their labels (None without a label column), checked before any model loads."""
    import numpy as np

    info = locate(path)
    kind = saved_kind(info)
    frame = read_table(input_path, info)
    missing = [f for f in info.text_fields if f not in frame.columns]
    if missing:
        raise FinetuneError(f"--input {input_path} has no column {', '.join(map(repr, missing))}; its columns are {list(frame.columns)}.")
    truth = np.array(parsed_labels(frame[info.label_field].tolist(), kind)) if info.label_field in frame.columns else None
    return frame, truth


def predict_file(predictor: Predictor, frame, truth, output_path: Path, all_scores: bool) -> Optional[Dict[str, Any]]:
    """Write ``frame``'s rows with the kind's prediction columns; return the task's metrics if it has labels."""
    kind, info = predictor.kind, predictor.info
    columns = [frame[f].astype(str).tolist() for f in info.text_fields]
    texts = columns[0] if len(columns) == 1 else list(zip(*columns))
    logits = predictor.logits(texts, progress=True)
    scores = kind.scores(logits)
    for name, values in kind.output_columns(scores).items():
        frame[name] = values
    if all_scores and scores.ndim == 2:
        for i, label in enumerate(kind.label_names):
            frame[f"score_{label}"] = scores[:, i]
    write_table(frame, output_path)
    if truth is None:
        return None
    metrics = kind.report(truth, logits)
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
    parser.add_argument("--top-k", type=positive_int, default=None, help="labels to print per text (default: all)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--max-length", type=positive_int, default=None, help="tokens per text (default: the model's limit, at most 512)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when present)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                        help="auto: half precision on GPUs, bf16 on CPUs with native bf16, else fp32")
    args = parser.parse_args(argv)
    if (args.text is None) == (args.input is None):
        parser.error("give either a TEXT or --input FILE")
    if args.input is not None and args.output is None:
        parser.error("--input needs --output FILE")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars: noise on a command line
    try:
        frame, truth = read_input(args.input, args.path) if args.input is not None else (None, None)
        predictor = Predictor.load(args.path, device=args.device, batch_size=args.batch_size, max_length=args.max_length, precision=args.precision)
        if frame is None:
            text: Text = (args.text, args.text_pair) if args.text_pair is not None else args.text
            print(rounded(predictor(text, top_k=args.top_k)))
            return 0
        metrics = predict_file(predictor, frame, truth, args.output, args.all_scores)
    except FinetuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {args.output}")
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
