"""Export a trained run to ONNX, fp32 or int8, proven against the PyTorch model it came from.

    python -m finetune.export outputs/<run>                        # outputs/<run>/export/: fp32 model.onnx
    python -m finetune.export outputs/<run> --quantize int8        # refused if the task's metric drops > --max-drop points
    python -m finetune.export outputs/<run> --check-file dev.csv --output deploy/

The export folder holds ``model.onnx`` (dynamic batch and sequence axes), the tokenizer,
``config.json`` (the label names), the kind's files (multi-label ``thresholds.json``) and
``export.json``: opset, precision, sizes, the task's settings and the parity check. After
exporting, the run's validation split (rebuilt from its saved config and seed) or
``--check-file`` goes through both models: max absolute logit difference, agreement of the
predictions, and the task's first metric of each. An fp32 export must agree on 99.9% of the
rows; an int8 export whose metric drops more than ``--max-drop`` points is refused. The folder
is written under a temporary name and moved into place only when the check passed.
"""

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from finetune.errors import FinetuneError
from finetune.files import replaced_atomically
from finetune.serving.cli import check_input, parsed_labels, positive_int
from finetune.serving.predictor import (
    EXPORT_DIR,
    EXPORT_INFO,
    Predictor,
    RunInfo,
    Text,
    locate,
    require_onnx,
    saved_kind,
)
from finetune.serving.tables import one_line_error
from finetune.tasks.data import quieted
from finetune.tasks.kind import CALIBRATION_FILE, TaskKind

OPSET = 17  # LayerNormalization is one operator from 17 on, which ONNX Runtime's fusions match
FP32_AGREEMENT = 0.999  # an fp32 export may differ from PyTorch only in the last bits: at most 1 row in 1,000
MAX_DROP = 0.5  # points of the task's metric an int8 export may lose
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Int8Recipe:
    """How the int8 model is made: ONNX Runtime's dynamic quantization of the MatMul weights."""

    fuse: bool = (
        False  # fuse attention, LayerNorm and GELU first (onnxruntime.transformers.optimizer, BERT-family graphs)
    )
    per_channel: bool = True  # one scale per output column instead of one per matrix
    keep_head_fp32: bool = True  # leave the classification head (pooler, classifier) in fp32

    def describe(self) -> Dict[str, Any]:
        return {
            "method": "onnxruntime.quantization.quantize_dynamic (weights int8, activations quantized per batch)",
            "fused": self.fuse,
            "per_channel": self.per_channel,
            "head_in_fp32": self.keep_head_fp32,
        }


# Measured on a MiniLM AG News run (docs/inference.md, bench/int8_recipes.py): per-tensor
# scales cost 0.4 points of accuracy, per-channel ones none; with the Predictor's passes of a
# few texts the fused graph (one QAttention per layer) ran 10-20% slower than the plain one;
# static quantization was slower still and lost 0.9-1.5 points. The fp32 head costs nothing measurable.
DEFAULT_INT8 = Int8Recipe()


@dataclass
class Reference:
    """The rows the export is checked on: texts, their labels (None for an unlabeled --check-file), and where they came from."""

    texts: List[Text]
    truth: Any
    source: str


def run_validation(run_dir: Path, info: RunInfo) -> Reference:
    """The run's validation split, rebuilt as training built it: the saved config, its data files and its seed."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from finetune.config.resolvers import register_resolvers
    from finetune.config.schemas import with_schemas
    from finetune.runs.resume import SAVED_CONFIG
    from finetune.tasks.data import label_array

    saved = run_dir / SAVED_CONFIG
    if not saved.is_file():
        raise FinetuneError(
            f"{run_dir} is not a run folder (no {SAVED_CONFIG}), so it has no validation split: give the rows to check with --check-file FILE."
        )
    register_resolvers()
    cfg = with_schemas(OmegaConf.load(saved))
    try:
        task = instantiate(cfg.task, _convert_="object")
        validation = task.load(seed=cfg.seed)["validation"]
    except FinetuneError as error:
        raise FinetuneError(
            f"Rebuilding the validation split of {run_dir} failed ({error}); give the rows to check with --check-file FILE."
        ) from error
    columns = [validation[field] for field in info.text_fields]
    texts = columns[0] if len(columns) == 1 else list(zip(*columns))
    return Reference(
        list(texts), label_array(validation), f"the validation split of the run ({len(texts)} rows, seed {cfg.seed})"
    )


def file_rows(path: Path, run: Path, kind: TaskKind) -> Reference:
    """The rows of ``--check-file``, read as the run's task reads its files."""
    import numpy as np

    source = check_input(path, run)
    texts: List[Text] = []
    truth: List[Any] = []
    for first, frame in source.chunks():
        columns = [frame[f].astype(str).tolist() for f in source.info.text_fields]
        texts.extend(columns[0] if len(columns) == 1 else zip(*columns))
        if source.labeled:
            truth.extend(parsed_labels(frame[source.info.label_field].tolist(), kind, first_row=first))
    return Reference(
        texts,
        np.array(truth) if source.labeled else None,
        f"{path} ({len(texts)} rows{'' if source.labeled else ', unlabeled'})",
    )


def export_onnx(model_dir: Path, tokenizer, sample: Sequence[Text], path: Path) -> None:
    """``torch.onnx.export`` of the model's logits, with dynamic batch and sequence axes."""
    import torch
    from transformers import AutoModelForSequenceClassification

    # Eager attention: the plain MatMul-Softmax-MatMul graph ONNX Runtime's attention fusion recognises.
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    pairs = not isinstance(sample[0], str)
    encoded = tokenizer(*(zip(*sample) if pairs else [list(sample)]), padding=True, return_tensors="pt")
    names = [name for name in MODEL_INPUTS if name in encoded]

    class Logits(torch.nn.Module):  # positional inputs in, logits out: what the exporter traces
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).logits

    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False):
            warnings.simplefilter("ignore")  # the tracer's warnings about Python values it fixes: shapes stay dynamic
            torch.onnx.export(
                Logits().eval(),
                tuple(encoded[n] for n in names),
                str(path),
                input_names=names,
                output_names=["logits"],
                dynamic_axes={**axes, "logits": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as error:  # the exporter raises many types; what failed is in the message
        raise FinetuneError(
            f"Exporting the {model.config.model_type} model to ONNX failed: {one_line_error(error)}"
        ) from error


def head_nodes(graph) -> List[str]:
    """The MatMul / Gemm nodes after the encoder's last LayerNorm: the pooler and the classifier."""
    producers = {output: node for node in graph.node for output in node.output}
    stack, seen, head = [graph.output[0].name], set(), []
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in seen or "LayerNormalization" in node.op_type:
            continue
        seen.add(node.name)
        if node.op_type in ("MatMul", "Gemm"):
            head.append(node.name)
        stack.extend(node.input)
    return head


def quantize_int8(fp32: Path, path: Path, config: Dict[str, Any], recipe: Int8Recipe = DEFAULT_INT8) -> None:
    """``fp32`` as dynamic int8 into ``path``, made as ``recipe`` says; ``config``: the model's config.json."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = fp32
    with quieted(
        None, logging.ERROR
    ):  # ONNX Runtime's tools warn through the root logger about steps that do not apply here
        if recipe.fuse:
            from onnxruntime.transformers.optimizer import optimize_model

            fused = fp32.with_name("fused.onnx")
            # Architectures without BERT's attention pattern (XLNet, DeBERTa) keep the fusions that do apply.
            heads = config.get("num_attention_heads") or config.get("n_heads") or 0
            hidden = config.get("hidden_size") or config.get("dim") or 0
            optimize_model(str(fp32), model_type="bert", num_heads=heads, hidden_size=hidden).save_model_to_file(
                str(fused)
            )
            source = fused
        excluded = head_nodes(onnx.load(str(source)).graph) if recipe.keep_head_fp32 else []
        # Fused operators live in ONNX Runtime's own domain, where ONNX's shape inference finds no types.
        quantize_dynamic(
            source,
            path,
            per_channel=recipe.per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
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
        return f"the fp32 export agrees with the PyTorch model on {numbers['agreement']:.2%} of the rows ({numbers['agreement_rule']}); it must on {FP32_AGREEMENT:.1%}"
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
        text += f"; {numbers['metric']}: PyTorch {numbers['pytorch']:.4f}, ONNX {numbers['onnx']:.4f} (drop {numbers['drop_points']:.2f} points)"
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
    info, kind, reference = _checked_request(run, output, quantize, check_file, overwrite)
    output, precision = output or run / EXPORT_DIR, quantize or "fp32"
    torch_predictor = Predictor.load(run, device="cpu", backend="torch", precision="fp32", threads=threads)
    started = time.perf_counter()
    reference_logits = torch_predictor.logits(reference.texts)
    torch_seconds = time.perf_counter() - started
    output.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(output) as folder, tempfile.TemporaryDirectory() as scratch:
        folder.mkdir()
        fp32 = Path(scratch) / "model.onnx"
        export_onnx(info.model_dir, torch_predictor.tokenizer, reference.texts[:2], fp32)
        if precision == "int8":
            quantize_int8(fp32, folder / "model.onnx", torch_predictor.runner.config)
        else:
            shutil.move(str(fp32), folder / "model.onnx")
        torch_predictor.tokenizer.save_pretrained(folder)
        shutil.copy(info.model_dir / "config.json", folder / "config.json")  # label names and problem type: the kind
        if (
            info.model_dir / CALIBRATION_FILE
        ).is_file():  # the temperatures folded into the exported layer: /info and readers tell them
            shutil.copy(info.model_dir / CALIBRATION_FILE, folder / CALIBRATION_FILE)
        for name, content in kind.model_files().items():
            (folder / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        record = _record(run, info, kind, precision, torch_predictor)
        (folder / EXPORT_INFO).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        onnx_predictor = Predictor.load(folder, backend="onnx", threads=threads, max_length=torch_predictor.max_length)
        started = time.perf_counter()
        exported_logits = onnx_predictor.logits(reference.texts)
        onnx_seconds = time.perf_counter() - started
        numbers = parity(kind, reference_logits, exported_logits, reference.truth)
        record["inputs"] = onnx_predictor.runner.inputs
        record["sizes_bytes"] = {
            "model.onnx": (folder / "model.onnx").stat().st_size,
            "pytorch_weights": sum(f.stat().st_size for f in info.model_dir.glob("*.safetensors")),
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
        record["versions"] = _versions()
        problem = refusal(precision, numbers, max_drop)
        if problem:
            raise ExportRefused(f"Export refused, nothing written: {problem}.\n  {summary(numbers)}")
        (folder / EXPORT_INFO).write_text(json.dumps(record, indent=2, default=_plain) + "\n", encoding="utf-8")
        del onnx_predictor  # its session holds model.onnx open: release it before the folder moves
    return record


def _record(run: Path, info: RunInfo, kind: TaskKind, precision: str, torch_predictor: Predictor) -> Dict[str, Any]:
    """What ``export.json`` says of the export before its check: format, precision, source, labels, task settings."""
    return {
        "format": "onnx",
        "opset": OPSET,
        "precision": precision,
        "int8": DEFAULT_INT8.describe() if precision == "int8" else None,
        "source": {"run": str(run.resolve()), "model_type": torch_predictor.runner.config.get("model_type")},
        "labels": kind.label_names,
        "kind": kind.name,
        "padding_side": torch_predictor.tokenizer.padding_side,
        "task": info.task_settings(),
    }


def _checked_request(
    run: Path, output: Optional[Path], quantize: Optional[str], check_file: Optional[Path], overwrite: bool
):
    """The run, its kind and the rows to check on, once every check on the request has passed: before the slow work."""
    info = locate(run)
    if info.export_dir == info.model_dir:
        raise FinetuneError(f"{run} is an export folder; export from the run folder it came from.")
    output = output or run / EXPORT_DIR
    if (
        output.exists() and not (output / EXPORT_INFO).is_file()
    ):  # never replace a folder of anything else (the run, say)
        raise FinetuneError(
            f"--output {output} exists and holds no export; choose a new folder (--overwrite replaces only an export)."
        )
    if output.exists() and not overwrite:
        raise FinetuneError(
            f"--output {output} holds an export; add --overwrite to replace it, or choose another folder."
        )
    kind = saved_kind(info)
    # The rows, and labels where the gate needs them.
    reference = file_rows(check_file, run, kind) if check_file else run_validation(run, info)
    if not reference.texts:
        raise FinetuneError(f"No rows to check the export on in {reference.source}.")
    if quantize == "int8" and reference.truth is None:
        raise FinetuneError(
            f"--quantize int8 is gated on the task's metric, which needs labels: {check_file} has no '{info.label_field}' column."
        )
    return info, kind, reference


def _plain(value: Any) -> Any:
    import numpy as np

    return value.item() if isinstance(value, np.generic) else str(value)


def _versions() -> Dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "onnx", "onnxruntime")}


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
        help="check on this CSV, TSV, JSON/JSONL or Parquet file instead of the run's validation split (labels needed for int8)",
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
    sizes = record["sizes_bytes"]
    print(
        f"Exported {output / 'model.onnx'} ({record['precision']}, opset {record['opset']}, {sizes['model.onnx'] / 2**20:.1f} MiB; "
        f"PyTorch weights {sizes['pytorch_weights'] / 2**20:.1f} MiB)"
    )
    print(
        f"Parity on {record['parity']['checked_on']}, {record['parity']['threads']} threads: {summary(record['parity'])}"
    )
    print(f'Serve it: python -m finetune.predict {output} "some text"  (or --backend onnx on the run folder)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
