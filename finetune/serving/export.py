"""Export a trained run to ONNX, fp32 or int8, proven against the PyTorch model it came from.

    python -m finetune.export outputs/<run>                        # outputs/<run>/export/: fp32 model.onnx
    python -m finetune.export outputs/<run> --quantize int8        # refused if the metric drops > --max-drop points
    python -m finetune.export outputs/<run> --check-file dev.csv --output deploy/

The export folder holds ``model.onnx`` (logits and text embeddings; dynamic batch and sequence
axes), the tokenizer, ``config.json`` (the label names), the model record and the kind's files, as
in the run's ``model/`` (finetune/runs/saved.py), and ``export.json``: opset, precision, sizes and
the parity check. After
exporting, the run's validation split (rebuilt from its saved config and seed) or
``--check-file`` goes through both models: max absolute logit difference, agreement of the
predictions, and the task's first metric of each. An fp32 export must agree on 99.9% of the
rows; an int8 export whose metric drops more than ``--max-drop`` points is refused. The folder
is written under a temporary name and moved into place only when the check passed; an existing export is
replaced only with ``--overwrite``. What ``export.json`` records is printed as JSON on stdout, the same in
words on stderr.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from finetune.errors import FinetuneError, unwrapped
from finetune.files import replaced_atomically
from finetune.inference.predictor import Predictor, Text
from finetune.inference.runners import require_onnx
from finetune.packages import versions
from finetune.runs.model_folder import ModelFolder, is_export, write_export_files, write_export_info
from finetune.runs.saved import EXPORT_DIR, ONNX_FILE, SavedRun
from finetune.serving.onnx_graph import DEFAULT_INT8, OPSET, export_onnx, quantize_int8
from finetune.serving.predict import check_input, parsed_labels, positive_int
from finetune.tasks.kind import TaskKind

FP32_AGREEMENT = 0.999  # an fp32 export may differ from PyTorch only in the last bits: at most 1 row in 1,000
MAX_DROP = 0.5  # points of the task's metric an int8 export may lose


@dataclass
class Reference:
    """The rows the export is checked on: texts, their labels (None for an unlabeled --check-file) and their source."""

    texts: List[Text]
    truth: Any
    source: str


def run_validation(folder: ModelFolder) -> Reference:
    """The run's validation split, rebuilt as training built it: the saved config, its data files and its seed."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from finetune.config.resolvers import register_resolvers
    from finetune.tasks.data import label_array

    run = folder.run or SavedRun(folder.path)
    if not run.has_config:
        raise FinetuneError(
            f"{folder.path} is not a run folder (no {run.config_path.relative_to(run.folder)}), so it has no "
            "validation split: "
            "give the rows to check with --check-file FILE."
        )
    register_resolvers()
    cfg = run.config()
    try:
        try:
            task = instantiate(cfg.task, _convert_="object")
        except InstantiationException as error:  # the task reads its file when built: its own message
            raise unwrapped(error) from None
        splits = task.load(seed=cfg.seed)
    except FinetuneError as error:
        raise FinetuneError(
            f"Rebuilding the validation split of {run.folder} failed ({error}); "
            "give the rows to check with --check-file FILE."
        ) from error
    split = "validation" if "validation" in splits else "test"  # few labels and a test file: no validation split
    rows = splits[split]
    columns = [rows[field] for field in folder.record.text_fields]
    texts = columns[0] if len(columns) == 1 else list(zip(*columns))
    return Reference(
        list(texts), label_array(rows), f"the {split} split of the run ({len(texts)} rows, seed {cfg.seed})"
    )


def file_rows(path: Path, run: Path, kind: TaskKind) -> Reference:
    """The rows of ``--check-file``, read as the run's task reads its files."""
    import numpy as np

    source = check_input(path, run)
    texts: List[Text] = []
    truth: List[Any] = []
    for first, frame in source.chunks():
        columns = [frame[f].astype(str).tolist() for f in source.folder.record.text_fields]
        texts.extend(columns[0] if len(columns) == 1 else zip(*columns))
        if source.labeled:
            truth.extend(parsed_labels(frame[source.folder.record.label_field].tolist(), kind, first_row=first))
    return Reference(
        texts,
        np.array(truth) if source.labeled else None,
        f"{path} ({len(texts)} rows{'' if source.labeled else ', unlabeled'})",
    )


def metric_drop(name: str, reference: float, exported: float) -> float:
    """How many points (x100) the export is worse on the metric: negative when it is better."""
    from finetune.tasks.metrics import greater_is_better

    return 100 * ((reference - exported) if greater_is_better(name) else (exported - reference))


def parity(kind: TaskKind, reference_logits, exported_logits, truth) -> Dict[str, Any]:
    """The export against its source on the same rows: logits, predictions, and the task's first metric."""
    import numpy as np

    numbers: Dict[str, Any] = {
        "rows": int(len(reference_logits)),
        "max_abs_logit_difference": float(np.abs(reference_logits - exported_logits).max())
        if len(reference_logits)
        else 0.0,
        "agreement": kind.agreement(reference_logits, exported_logits),
        "agreement_rule": kind.agreement_rule,
        "metric": kind.metrics[0],
    }
    if truth is not None:
        metric = kind.metrics[0]
        numbers["pytorch"] = kind.evaluate(truth, reference_logits)[metric]
        numbers["onnx"] = kind.evaluate(truth, exported_logits)[metric]
        numbers["drop_points"] = metric_drop(metric, numbers["pytorch"], numbers["onnx"])
    return numbers


def refusal(precision: str, numbers: Dict[str, Any], max_drop: float) -> Optional[str]:
    """Why the export fails its check, or None."""
    if precision == "fp32" and numbers["agreement"] < FP32_AGREEMENT:
        return (
            f"the fp32 export agrees with the PyTorch model on {numbers['agreement']:.2%} of the rows "
            f"({numbers['agreement_rule']}); it must on {FP32_AGREEMENT:.1%}"
        )
    if precision == "int8" and numbers["drop_points"] > max_drop:
        return (
            f"int8 loses {numbers['drop_points']:.2f} points of {numbers['metric']}, more than --max-drop {max_drop:g}"
        )
    return None


def summary(numbers: Dict[str, Any]) -> str:
    text = (
        f"max |logit difference| {numbers['max_abs_logit_difference']:.3g}, agreement {numbers['agreement']:.2%} "
        f"({numbers['agreement_rule']}) on {numbers['rows']} rows"
    )
    if "pytorch" in numbers:
        text += (
            f"; {numbers['metric']}: PyTorch {numbers['pytorch']:.4f}, ONNX {numbers['onnx']:.4f} "
            f"(drop {numbers['drop_points']:.2f} points)"
        )
    return text


class ExportRefused(FinetuneError):
    """The export failed its parity check."""


def export(
    run: Path,
    output: Optional[Path] = None,
    quantize: Optional[str] = None,
    check_file: Optional[Path] = None,
    max_drop: float = MAX_DROP,
    threads: Optional[int] = None,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Export ``run`` into ``output`` (default ``run/export``), check it, and return what ``export.json`` records.

    Raises ``FinetuneError`` (and leaves ``output`` as it was) when the check fails.
    """
    require_onnx()
    source, kind, reference = _checked_request(run, output, quantize, check_file, overwrite)
    output, precision = output or run / EXPORT_DIR, quantize or "fp32"
    torch_predictor = Predictor.load(run, device="cpu", backend="torch", precision="fp32", threads=threads)
    started = time.perf_counter()
    reference_logits = torch_predictor.logits(reference.texts)
    torch_seconds = time.perf_counter() - started
    output.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(output) as folder, tempfile.TemporaryDirectory() as scratch:
        folder.mkdir()
        fp32 = Path(scratch) / ONNX_FILE
        export_onnx(source.model_dir, torch_predictor.tokenizer, reference.texts[:2], fp32)
        if precision == "int8":
            quantize_int8(fp32, folder / ONNX_FILE, torch_predictor.runner.config)
        else:
            shutil.move(str(fp32), folder / ONNX_FILE)
        torch_predictor.tokenizer.save_pretrained(folder)
        record = _record(run, precision, torch_predictor)
        write_export_files(source, folder, record)  # the model record and the kind's files, as in model/
        onnx_predictor = Predictor.load(folder, backend="onnx", threads=threads, max_length=torch_predictor.max_length)
        started = time.perf_counter()
        exported_logits = onnx_predictor.logits(reference.texts)
        onnx_seconds = time.perf_counter() - started
        numbers = parity(kind, reference_logits, exported_logits, reference.truth)
        record["inputs"] = onnx_predictor.runner.inputs
        record["outputs"] = onnx_predictor.runner.outputs
        record["sizes_bytes"] = {
            ONNX_FILE: (folder / ONNX_FILE).stat().st_size,
            "pytorch_weights": sum(f.stat().st_size for f in source.model_dir.glob("*.safetensors")),
        }
        record["parity"] = {
            "checked_on": reference.source,
            **numbers,
            "max_drop_points": max_drop,
            "threads": onnx_predictor.threads,
            "ms_per_text": {
                "pytorch_fp32": 1000 * torch_seconds / len(reference.texts),
                "onnx": 1000 * onnx_seconds / len(reference.texts),
            },
        }
        record["versions"] = versions(("torch", "transformers", "onnx", "onnxruntime"))
        problem = refusal(precision, numbers, max_drop)
        if problem:
            raise ExportRefused(f"Export refused, nothing written: {problem}.\n  {summary(numbers)}")
        write_export_info(folder, record)
        del onnx_predictor  # its session holds model.onnx open: release it before the folder moves
    return record


def _record(run: Path, precision: str, torch_predictor: Predictor) -> Dict[str, Any]:
    """What ``export.json`` says of the export before its check: format, precision, source. What the model's answers
    mean (kind, labels, task settings) is the model record, copied beside it."""
    return {
        "format": "onnx",
        "opset": OPSET,
        "precision": precision,
        "int8": DEFAULT_INT8.describe() if precision == "int8" else None,
        "source": {"run": str(run.resolve()), "model_type": torch_predictor.runner.config.get("model_type")},
        "padding_side": torch_predictor.tokenizer.padding_side,
    }


def _checked_request(
    run: Path, output: Optional[Path], quantize: Optional[str], check_file: Optional[Path], overwrite: bool
):
    """The run, its kind and the rows to check on, once every check on the request has passed: before the slow work."""
    source = ModelFolder.open(run)
    if source.is_export:
        raise FinetuneError(f"{run} is an export folder; export from the run folder it came from.")
    output = output or run / EXPORT_DIR
    if output.exists() and not is_export(output):  # never replace a folder of anything else (the run, say)
        raise FinetuneError(
            f"--output {output} exists and holds no export; choose a new folder (--overwrite replaces only an export)."
        )
    if output.exists() and not overwrite:
        raise FinetuneError(
            f"--output {output} holds an export; add --overwrite to replace it, or choose another folder."
        )
    kind = source.kind()
    # The rows, and labels where the gate needs them.
    reference = file_rows(check_file, run, kind) if check_file else run_validation(source)
    if not reference.texts:
        raise FinetuneError(f"No rows to check the export on in {reference.source}.")
    if quantize == "int8" and reference.truth is None:
        raise FinetuneError(
            "--quantize int8 is gated on the task's metric, which needs labels: "
            f"{check_file} has no '{source.record.label_field}' column."
        )
    return source, kind, reference


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m finetune.export",
        description="Export a trained run to ONNX (fp32 or int8), checked against the PyTorch model.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("run", type=Path, help="a run folder (its model/ and saved config)")
    parser.add_argument("--format", choices=["onnx"], default="onnx")
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="int8: dynamic quantization, refused if the metric drops more than --max-drop",
    )
    parser.add_argument("--output", type=Path, default=None, help=f"the export folder (default RUN/{EXPORT_DIR})")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --output if it exists (only once the new export passed its check)",
    )
    parser.add_argument(
        "--check-file",
        type=Path,
        default=None,
        help="check on this CSV, TSV, JSON/JSONL or Parquet file instead of the run's validation split "
        "(labels needed for int8)",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=MAX_DROP,
        help=f"points of the task's first metric int8 may lose (default {MAX_DROP})",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="intra-op CPU threads for the check (default: the CPUs this process may use)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        record = export(
            args.run, args.output, args.quantize, args.check_file, args.max_drop, args.threads, args.overwrite
        )
    except FinetuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    output = args.output or args.run / EXPORT_DIR
    print(json.dumps({"output": str(output), **record}))
    sizes = record["sizes_bytes"]
    print(
        f"Exported {output / ONNX_FILE} ({record['precision']}, opset {record['opset']}, "
        f"{sizes[ONNX_FILE] / 2**20:.1f} MiB; "
        f"PyTorch weights {sizes['pytorch_weights'] / 2**20:.1f} MiB)",
        file=sys.stderr,
    )
    print(
        f"Parity on {record['parity']['checked_on']}, {record['parity']['threads']} threads: "
        f"{summary(record['parity'])}",
        file=sys.stderr,
    )
    print(
        f'Serve it: python -m finetune.predict {output} "some text"  (or --backend onnx on the run folder)',
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
