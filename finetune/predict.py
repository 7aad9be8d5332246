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

Text = Union[str, Tuple[str, str]]  # a text, or a (first, second) pair
Scores = List[Dict[str, Any]]  # [{"label": name, "score": p}, ...], best first


@dataclass
class RunInfo:
    """What a run folder says about its task; defaults for a plain model folder."""

    model_dir: Path
    text_fields: List[str] = field(default_factory=lambda: ["text"])
    label_field: str = "label"
    max_length: Optional[int] = None  # the length the model was trained with
    labels: List[str] = field(default_factory=list)  # class names, by id, from the model's config


def locate(path: Union[str, Path]) -> RunInfo:
    """Accept a run folder (uses its model/ and saved config) or a model folder."""
    from omegaconf import OmegaConf

    path = Path(path).expanduser()
    if not path.is_dir():
        raise FinetuneError(f"No such folder: {path}")
    model_dir = path / "model" if (path / "model" / "config.json").is_file() else path
    if not (model_dir / "config.json").is_file():
        raise FinetuneError(f"{path} holds no model: expected a run folder with model/, or a folder with config.json and weights.")
    id2label = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("id2label", {})
    info = RunInfo(model_dir, labels=[id2label[k] for k in sorted(id2label, key=int)])
    saved = path / ".hydra" / "config.yaml"
    if model_dir != path and saved.is_file():
        task = OmegaConf.load(saved).task
        info.text_fields, info.label_field, info.max_length = list(task.text_fields), task.label_field, task.max_length
    return info


class Predictor:
    """A fine-tuned classifier: call it on a text, a (first, second) pair, or a list of either."""

    def __init__(self, model, tokenizer, batch_size: int = 64, max_length: Optional[int] = None, precision: str = "auto"):
        import torch

        from finetune.hardware import resolve_precision

        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.max_length = max_length or min(tokenizer.model_max_length, 512)
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
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
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            tokenizer = AutoTokenizer.from_pretrained(info.model_dir)
            model = AutoModelForSequenceClassification.from_pretrained(info.model_dir).to(device)
        except (OSError, ValueError) as error:
            raise FinetuneError(f"Could not load the model in {info.model_dir}: {error}") from error
        options["max_length"] = options.get("max_length") or info.max_length
        predictor = cls(model, tokenizer, **options)
        predictor.info = info
        return predictor

    def __call__(self, texts: Union[Text, Sequence[Text]], top_k: Optional[int] = None) -> Union[Scores, List[Scores]]:
        """Scores for one input (a list of label/score dicts) or for a list of inputs (a list of those)."""
        single = isinstance(texts, (str, tuple))
        probabilities = self.probabilities([texts] if single else list(texts))
        results = [self._ranked(row, top_k) for row in probabilities]
        return results[0] if single else results

    def probabilities(self, texts: Sequence[Text], progress: bool = False):
        """Class probabilities, one row per input, in input order (a numpy array)."""
        import numpy as np
        import torch
        from tqdm.auto import tqdm

        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        pairs = [t for t in texts if not isinstance(t, str)]
        if pairs and len(pairs) != len(texts):
            raise FinetuneError("Mix of single texts and pairs in one call: classify them separately.")
        columns = list(zip(*texts)) if pairs else [list(texts)]
        encoded = self.tokenizer(*columns, truncation=True, max_length=self.max_length)
        order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
        result = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="Classifying", unit="batch", disable=not progress):
            rows = order[start : start + self.batch_size]
            batch = self.tokenizer.pad([{k: encoded[k][i] for k in encoded} for i in rows], return_tensors="pt")
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
            autocast = torch.autocast(self.model.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)
            with torch.inference_mode(), autocast:
                logits = self.model(**batch).logits
            result[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return result

    def _ranked(self, row, top_k: Optional[int]) -> Scores:
        ranked = sorted(zip(self.labels, row.tolist()), key=lambda pair: -pair[1])
        return [{"label": label, "score": score} for label, score in ranked[:top_k]]


def read_table(path: Path):
    """A CSV, TSV (GLUE style, unquoted), JSON / JSONL or Parquet file as a pandas DataFrame."""
    import pandas as pd

    from finetune.data import LOCAL_FORMATS

    suffix = path.suffix.lower()
    if not path.is_file():
        raise FinetuneError(f"--input: no such file: {path}")
    if suffix not in LOCAL_FORMATS:
        raise FinetuneError(f"--input: cannot read '{suffix}' files; use one of {', '.join(LOCAL_FORMATS)}.")
    builder, options = LOCAL_FORMATS[suffix]
    try:
        if builder == "csv":  # the same reader options as training data: TSV unquoted, no NaN words
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
    return frame


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


def label_ids(values: Sequence[Any], labels: List[str]) -> List[int]:
    """The ids of a label column given as names or ids; an unknown value names its row."""
    from finetune.data import _label_id

    ids = {name: i for i, name in enumerate(labels)}
    result = []
    for row, value in enumerate(values):
        label_id = _label_id(value, ids)
        if label_id is None or not 0 <= label_id < len(labels):
            raise FinetuneError(f"--input row {row + 1}: label {value!r} is neither one of {labels} nor an id 0-{len(labels) - 1}.")
        result.append(label_id)
    return result


def evaluate(truth: Sequence[int], predicted: Sequence[int], labels: List[str]) -> Dict[str, Any]:
    """Accuracy, macro F1, per-class precision / recall / F1 and the confusion matrix."""
    from sklearn.metrics import accuracy_score, f1_score

    from finetune.report import class_scores

    return {
        "rows": len(truth),
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1": float(f1_score(truth, predicted, labels=list(range(len(labels))), average="macro", zero_division=0)),
        **class_scores(truth, predicted, labels),
    }


def read_input(input_path: Path, info: RunInfo):
    """The rows to classify and their label ids (None without a label column), checked before any model loads."""
    frame = read_table(input_path)
    missing = [f for f in info.text_fields if f not in frame.columns]
    if missing:
        raise FinetuneError(f"--input {input_path} has no column {', '.join(map(repr, missing))}; its columns are {list(frame.columns)}.")
    truth = label_ids(frame[info.label_field].tolist(), info.labels) if info.label_field in frame.columns else None
    return frame, truth


def classify_file(predictor: Predictor, frame, truth: Optional[List[int]], output_path: Path, all_scores: bool) -> Optional[Dict[str, Any]]:
    """Write ``frame``'s rows with ``predicted_label`` and ``score``; return metrics if it has labels."""
    info = predictor.info
    columns = [frame[f].astype(str).tolist() for f in info.text_fields]
    texts = columns[0] if len(columns) == 1 else list(zip(*columns))
    probabilities = predictor.probabilities(texts, progress=True)
    predicted = probabilities.argmax(axis=1)
    frame["predicted_label"] = [predictor.labels[i] for i in predicted]
    frame["score"] = probabilities.max(axis=1)
    if all_scores:
        for i, label in enumerate(predictor.labels):
            frame[f"score_{label}"] = probabilities[:, i]
    write_table(frame, output_path)
    if truth is None:
        return None
    metrics = evaluate(truth, predicted.tolist(), predictor.labels)
    metrics_path = output_path.with_name(output_path.stem + ".metrics.json")
    write_json(metrics_path, metrics)
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
        prog="python -m finetune.predict", description="Classify text with a trained run or model folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("path", help="a run folder (uses its model/ and task settings) or a model folder")
    parser.add_argument("text", nargs="?", help="a text to classify")
    parser.add_argument("--text-pair", help="the second text of a pair (premise TEXT, hypothesis --text-pair)")
    parser.add_argument("--input", type=Path, help="a CSV, TSV, JSON/JSONL or Parquet file to classify, row by row")
    parser.add_argument("--output", type=Path, help="where to write --input's rows with predicted_label and score")
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
        frame, truth = read_input(args.input, locate(args.path)) if args.input is not None else (None, None)
        predictor = Predictor.load(args.path, device=args.device, batch_size=args.batch_size, max_length=args.max_length, precision=args.precision)
        if frame is None:
            text: Text = (args.text, args.text_pair) if args.text_pair is not None else args.text
            scores = predictor(text, top_k=args.top_k)
            print([{"label": s["label"], "score": round(s["score"], 3)} for s in scores])
            return 0
        metrics = classify_file(predictor, frame, truth, args.output, args.all_scores)
    except FinetuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {args.output}")
    if metrics is not None:
        print(f"accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['f1']:.4f}  on {metrics['rows']} labeled rows")
        for name, scores in metrics["per_class"].items():
            print(f"  {name:<20} precision {scores['precision']:.3f}  recall {scores['recall']:.3f}  f1 {scores['f1']:.3f}  n={scores['support']}")
        print(f"Metrics, per-class report and confusion matrix: {args.output.with_name(args.output.stem + '.metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
