"""How many texts per forward pass on a CPU: the Predictor's padded-token budget, per backend.

    python bench/batch_tokens.py runs/minilm_ag [--data ../shared/data/ag_news/test.csv] [--rows 5600]

Classifies the first ROWS texts of DATA with the run's PyTorch model (its default precision)
and its int8 ONNX export (RUN/export_int8), each with several ``max_batch_tokens`` budgets
(none: passes of up to 64 texts, as before the budget existed), and for ONNX also with the
lengths rounded up to a multiple of 8 as PyTorch's are. The settings take turns over slices of
the data, so a busy moment of the machine slows each alike. Prints a Markdown table: ms/text,
the mean texts per pass over all ROWS texts, accuracy.
``finetune.inference.predictor.CPU_BATCH_TOKENS`` holds the budgets kept.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from finetune.inference.predictor import Predictor, length_batches  # noqa: E402

NO_LIMIT = 10**9  # no token budget: passes of up to 64 texts


def settings(run: Path, int8: Path) -> dict:
    """Each setting measured: a name and its Predictor."""
    torch_budgets = {"none (64 texts)": NO_LIMIT, "4,096": 4096, "2,048": 2048, "1,024": 1024, "512": 512}
    onnx_budgets = {"none (64 texts)": NO_LIMIT, "2,048": 2048, "1,024": 1024, "512": 512, "256": 256}
    chosen = {
        f"torch, {name}": Predictor.load(run, backend="torch", max_batch_tokens=budget)
        for name, budget in torch_budgets.items()
    }
    chosen.update(
        {
            f"onnx int8, {name}": Predictor.load(int8, backend="onnx", max_batch_tokens=budget)
            for name, budget in onnx_budgets.items()
        }
    )
    padded = Predictor.load(int8, backend="onnx", max_batch_tokens=512)
    padded.runner.pad_multiple = 8
    chosen["onnx int8, 512, lengths rounded up to 8"] = padded
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--int8", type=Path, default=None, help="the int8 export folder (default RUN/export_int8)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ag_news" / "test.csv")
    parser.add_argument("--rows", type=int, default=5600)
    parser.add_argument("--slices", type=int, default=4)
    args = parser.parse_args()
    frame = pd.read_csv(args.data, keep_default_na=False).head(args.rows)
    texts, truth = frame["text"].tolist(), frame["label"].to_numpy()
    predictors = settings(args.run, args.int8 or args.run / "export_int8")
    for predictor in predictors.values():
        predictor.logits(texts[:64])  # warm-up
    seconds, logits = dict.fromkeys(predictors, 0.0), {name: [] for name in predictors}
    bounds = [round(i * len(texts) / args.slices) for i in range(args.slices + 1)]
    for start, end in zip(bounds, bounds[1:]):
        for name, predictor in predictors.items():
            started = time.perf_counter()
            logits[name].append(predictor.logits(texts[start:end]))
            seconds[name] += time.perf_counter() - started
    print(
        f"{len(texts)} texts of {args.data.name}, run {args.run.name}; {next(iter(predictors.values())).describe()}\n"
    )
    print("| backend, padded tokens per pass at most | ms / text | texts per pass | accuracy |")
    print("|---|---:|---:|---:|")
    for name, predictor in predictors.items():
        accuracy = float((np.concatenate(logits[name]).argmax(axis=1) == truth).mean())
        lengths = [
            len(ids)
            for ids in predictor.tokenizer(texts, truncation=True, max_length=predictor.max_length)["input_ids"]
        ]
        per_pass = len(texts) / len(
            length_batches(lengths, predictor.batch_size, predictor.tokens_per_pass, predictor.runner.pad_multiple)
        )
        print(f"| {name} | {1000 * seconds[name] / len(texts):.2f} | {per_pass:.1f} | {accuracy:.4f} |", flush=True)


if __name__ == "__main__":
    main()
