"""Inference speed: transformers.pipeline, finetune's Predictor (PyTorch) and its ONNX exports, on one trained run.

    python -m finetune.export outputs/<minilm run>                                            # fp32: <run>/export
    python -m finetune.export outputs/<minilm run> --quantize int8 --output outputs/<minilm run>/export_int8
    python bench/predict_speed.py outputs/<minilm run> [--data ../shared/data/ag_news/test.csv] [--rows 5600]

Classifies the first ROWS texts of DATA six ways in one process: pipeline with its defaults,
pipeline with batch_size=32 (both fp32), the Predictor in fp32 and in bf16 (only where the CPU
computes bf16 natively), and the Predictor on the ONNX fp32 and int8 exports. Start-up is
excluded (each model is loaded and warmed up first), and the methods alternate over slices of
the data, so a busy moment of the machine slows every method alike. Peak memory is measured
apart, in one fresh process per method that loads the model and classifies the first
--memory-rows texts. Prints a Markdown table: ms per text, throughput relative to the default
pipeline, accuracy, model size on disk and peak memory.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune.devices import cpu_has_native_bf16  # noqa: E402
from finetune.inference.predictor import Predictor  # noqa: E402
from finetune.runs.model_folder import ModelFolder  # noqa: E402

METHODS = {
    "pipeline": "`pipeline`, defaults (fp32, batch 1)",
    "pipeline32": "`pipeline`, `batch_size=32` (fp32)",
    "torch_fp32": "`Predictor`, PyTorch fp32",
    "torch_bf16": "`Predictor`, PyTorch bf16 autocast",
    "onnx_fp32": "`Predictor`, ONNX fp32",
    "onnx_int8": "`Predictor`, ONNX int8",
}
Classify = Callable[[List[str]], List[int]]


def classifier(method: str, args: argparse.Namespace) -> Tuple[Classify, Path, str]:
    """A function from texts to class ids, the model file it runs, and how it runs (threads, precision)."""
    model_dir = ModelFolder.open(args.run).model_dir
    if method.startswith("pipeline"):
        import torch
        from transformers import pipeline

        classify = pipeline("text-classification", model=str(model_dir), device="cpu")
        names = [classify.model.config.id2label[i] for i in range(classify.model.config.num_labels)]
        batch_size = 32 if method == "pipeline32" else 1
        return (
            lambda texts: [names.index(r["label"]) for r in classify(texts, batch_size=batch_size)],
            model_dir / "model.safetensors",
            f"PyTorch, fp32, {torch.get_num_threads()} threads",
        )
    if method.startswith("torch"):
        predictor = Predictor.load(args.run, device="cpu", backend="torch", precision=method.split("_")[1])
        weights = model_dir / "model.safetensors"
    else:
        predictor = Predictor.load(args.onnx if method == "onnx_fp32" else args.int8, backend="onnx")
        weights = predictor.runner.onnx_file
    return lambda texts: predictor.kind.predict(predictor.scores(texts)).tolist(), weights, predictor.describe()


def texts_and_labels(args: argparse.Namespace, rows: int) -> Tuple[List[str], List[int]]:
    frame = pd.read_csv(args.data, keep_default_na=False).head(rows)
    return frame["text"].tolist(), frame["label"].tolist()


def peak_memory(method: str, args: argparse.Namespace) -> float:
    """MiB: the peak resident memory of a fresh process that loads ``method``'s model
    and classifies --memory-rows texts."""
    command = [
        sys.executable,
        __file__,
        str(args.run),
        "--data",
        str(args.data),
        "--onnx",
        str(args.onnx),
        "--int8",
        str(args.int8),
        "--rows",
        str(args.memory_rows),
        "--memory-of",
        method,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ag_news" / "test.csv"
    )
    parser.add_argument("--rows", type=int, default=5600)
    parser.add_argument("--onnx", type=Path, default=None, help="the fp32 export folder (default RUN/export)")
    parser.add_argument("--int8", type=Path, default=None, help="the int8 export folder (default RUN/export_int8)")
    parser.add_argument(
        "--slices",
        type=int,
        default=8,
        help="the data is cut into this many slices; each goes through every method in turn",
    )
    parser.add_argument("--memory-rows", type=int, default=1000, help="texts each memory-measuring process classifies")
    parser.add_argument(
        "--memory-of", choices=list(METHODS), help=argparse.SUPPRESS
    )  # the child process of peak_memory
    args = parser.parse_args()
    args.onnx, args.int8 = args.onnx or args.run / "export", args.int8 or args.run / "export_int8"

    if args.memory_of:
        classify, _, _ = classifier(args.memory_of, args)
        classify(texts_and_labels(args, args.rows)[0])
        # VmHWM, not ru_maxrss: ru_maxrss keeps the parent's size across fork and exec,
        # VmHWM starts anew with the program.
        status = Path("/proc/self/status").read_text().splitlines()
        print(int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024)  # KiB
        return

    methods = [m for m in METHODS if m != "torch_bf16" or cpu_has_native_bf16()]
    texts, truth = texts_and_labels(args, args.rows)
    loaded = {method: classifier(method, args) for method in methods}
    for classify, _, _ in loaded.values():
        classify(texts[:32])  # warm-up: first-call allocations, lazy initialisation
    seconds = dict.fromkeys(methods, 0.0)
    labels = {method: [] for method in methods}
    bounds = [round(i * len(texts) / args.slices) for i in range(args.slices + 1)]
    for start, end in zip(bounds, bounds[1:]):
        for method, (classify, _, _) in loaded.items():
            started = time.perf_counter()
            labels[method].extend(classify(texts[start:end]))
            seconds[method] += time.perf_counter() - started
    memory = {method: peak_memory(method, args) for method in methods}

    import torch

    print(
        f"{len(texts)} texts of {args.data.name}, run {args.run.name}, torch {torch.__version__}, "
        f"{args.slices} alternating slices; "
        f"peak memory: a fresh process classifying {args.memory_rows} texts\n"
    )
    for method, (_, _, how) in loaded.items():
        print(f"- {METHODS[method]}: {how}")
    if "torch_bf16" not in methods:
        print("- `Predictor`, PyTorch bf16: left out, this CPU has no native bf16")
    print("\n| method | ms / text | vs pipeline defaults | accuracy | model on disk | peak memory |")
    print("|---|---:|---:|---:|---:|---:|")
    for method, (_, weights, _) in loaded.items():
        accuracy = sum(int(a == b) for a, b in zip(labels[method], truth)) / len(truth)
        print(
            f"| {METHODS[method]} | {1000 * seconds[method] / len(texts):.2f} | "
            f"{seconds['pipeline'] / seconds[method]:.2f}x | {accuracy:.4f} | "
            f"{weights.stat().st_size / 2**20:.1f} MiB | {memory[method]:.0f} MiB |"
        )


if __name__ == "__main__":
    main()
