"""Which int8 recipe: accuracy and speed of each way of quantizing one exported run.

    python -m finetune.export outputs/<minilm run> --output outputs/<minilm run>/export
    python bench/int8_recipes.py outputs/<minilm run>/export [--data ../shared/data/ag_news/test.csv] [--rows 5600]

Quantizes the fp32 ``model.onnx`` of an export folder several ways (ONNX Runtime's dynamic
int8: per-tensor or per-channel scales, with or without graph fusion first, with the
classification head quantized or left in fp32; and static int8, whose activation scales are
fixed beforehand from the first CALIBRATION_ROWS texts of the run's train file, in the
QOperator and QDQ formats) and classifies the first ROWS texts of DATA with each, in ONNX Runtime,
alternating the recipes over slices of the data. Prints a Markdown table: ms/text, accuracy
and its change from fp32, model size. The best recipe is ``finetune.serving.export.DEFAULT_INT8``.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import numpy as np
import onnxruntime
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune.inference.predictor import Predictor  # noqa: E402
from finetune.runs.model_folder import ModelFolder, write_export_info  # noqa: E402
from finetune.serving.onnx_graph import Int8Recipe, head_nodes, quantize_int8  # noqa: E402

RECIPES = {
    "per-tensor": Int8Recipe(fuse=False, per_channel=False, keep_head_fp32=False),
    "per-channel": Int8Recipe(fuse=False, per_channel=True, keep_head_fp32=False),
    "per-channel, head fp32": Int8Recipe(fuse=False, per_channel=True, keep_head_fp32=True),
    "fused, per-tensor": Int8Recipe(fuse=True, per_channel=False, keep_head_fp32=False),
    "fused, per-channel": Int8Recipe(fuse=True, per_channel=True, keep_head_fp32=False),
    "fused, per-channel, head fp32": Int8Recipe(fuse=True, per_channel=True, keep_head_fp32=True),
    "fused, per-tensor, head fp32": Int8Recipe(fuse=True, per_channel=False, keep_head_fp32=True),
}


STATIC = {"static, per-channel, QOperator": "QOperator", "static, per-channel, QDQ": "QDQ"}


class CalibrationRows:
    """ONNX Runtime's calibration reader: the model's inputs for each text, one at a time."""

    def __init__(self, export: Path, texts: List[str]):
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(export)
        names = [i.name for i in onnxruntime.InferenceSession(str(export / "model.onnx")).get_inputs()]
        encoded = tokenizer(
            texts,
            truncation=True,
            max_length=ModelFolder.open(export).record.max_length,
            return_token_type_ids="token_type_ids" in names,
        )
        self.rows = iter(
            [{name: np.array([encoded[name][i]], dtype=np.int64) for name in names} for i in range(len(texts))]
        )

    def get_next(self):
        return next(self.rows, None)


def quantize_static_int8(export: Path, path: Path, quant_format: str, texts: List[str]) -> None:
    """Static int8: weights per channel, activations with scales measured on ``texts`` (min-max);
    the head stays fp32."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    source = export / "model.onnx"
    quantize_static(
        str(source),
        str(path),
        CalibrationRows(export, texts),
        quant_format=getattr(QuantFormat, quant_format),
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=head_nodes(onnx.load(str(source)).graph),
    )


def variant(source: Path, folder: Path, precision: str) -> Path:
    """A copy of the export folder ``source`` whose model.onnx will be replaced."""
    shutil.copytree(source, folder)
    write_export_info(folder, {**ModelFolder.open(folder).export_info(), "precision": precision})
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="an fp32 export folder (python -m finetune.export RUN)")
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ag_news" / "test.csv"
    )
    parser.add_argument("--rows", type=int, default=5600)
    parser.add_argument(
        "--slices",
        type=int,
        default=4,
        help="the data is split into this many slices; each slice goes through every recipe in turn",
    )
    parser.add_argument(
        "--train",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ag_news" / "train.csv",
        help="the run's train file: static recipes calibrate on its first CALIBRATION_ROWS texts, "
        "rows the run trained on",
    )
    parser.add_argument("--calibration-rows", type=int, default=200)
    parser.add_argument(
        "--recipe", action="append", default=None, help="measure only this recipe (repeatable; the names of the table)"
    )
    args = parser.parse_args()
    if ModelFolder.open(args.export).export_info()["precision"] != "fp32":
        raise SystemExit(f"{args.export} is not an fp32 export")

    frame = pd.read_csv(args.data, keep_default_na=False).head(args.rows)
    texts, truth = frame["text"].tolist(), frame["label"].to_numpy()
    with tempfile.TemporaryDirectory() as scratch:
        folders = {"fp32 (no quantization)": args.export}
        wanted = set(args.recipe or [*RECIPES, *STATIC])
        unknown = wanted - {*RECIPES, *STATIC}
        if unknown:
            raise SystemExit(f"unknown recipes {sorted(unknown)}: choose from {[*RECIPES, *STATIC]}")
        for name, recipe in ((n, r) for n, r in RECIPES.items() if n in wanted):
            folder = variant(args.export, Path(scratch) / name.replace(", ", "_").replace(" ", "-"), "int8")
            fp32 = Path(scratch) / "fp32" / name / "model.onnx"
            fp32.parent.mkdir(parents=True)
            shutil.copy(args.export / "model.onnx", fp32)
            quantize_int8(fp32, folder / "model.onnx", json.loads((args.export / "config.json").read_text()), recipe)
            folders[name] = folder
        calibration = pd.read_csv(args.train, keep_default_na=False)["text"].head(args.calibration_rows).tolist()
        for name, quant_format in ((n, f) for n, f in STATIC.items() if n in wanted):
            folder = variant(args.export, Path(scratch) / quant_format, "int8")
            quantize_static_int8(args.export, folder / "model.onnx", quant_format, calibration)
            folders[name] = folder
        predictors = {name: Predictor.load(folder, backend="onnx") for name, folder in folders.items()}
        for predictor in predictors.values():
            predictor.logits(texts[:64])  # warm-up
        seconds = dict.fromkeys(predictors, 0.0)
        logits = {name: [] for name in predictors}
        bounds = [round(i * len(texts) / args.slices) for i in range(args.slices + 1)]
        for start, end in zip(bounds, bounds[1:]):  # alternate: a load spike on the machine hits every recipe alike
            for name, predictor in predictors.items():
                started = time.perf_counter()
                logits[name].append(predictor.logits(texts[start:end]))
                seconds[name] += time.perf_counter() - started
        sizes = {name: (folder / "model.onnx").stat().st_size for name, folder in folders.items()}
        threads = next(iter(predictors.values())).threads

    base = "fp32 (no quantization)"
    accuracy = {name: float((np.concatenate(parts).argmax(axis=1) == truth).mean()) for name, parts in logits.items()}
    print(
        f"{len(texts)} texts of {args.data.name}, export {args.export}, ONNX Runtime, {threads} threads, "
        "the Predictor's batches\n"
    )
    print("| recipe | ms / text | vs fp32 | accuracy | change (points) | model.onnx |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in logits:
        print(
            f"| {name} | {1000 * seconds[name] / len(texts):.2f} | {seconds[base] / seconds[name]:.2f}x | "
            f"{accuracy[name]:.4f} | "
            f"{100 * (accuracy[name] - accuracy[base]):+.2f} | {sizes[name] / 2**20:.1f} MiB |"
        )


if __name__ == "__main__":
    main()
