"""Memory of ``python -m finetune.suggest MODEL POOL`` as the pool grows, for every strategy.

    python bench/suggest_memory.py [--rows 10000,1000000] [--strategies margin,entropy,clustered,random,cold_start]
                                   [--data ../shared/data/ag_news/train.csv] [--threads 1]

The model is bench/predict_memory.py's tiny random BERT (2 layers, 64 wide, MiniLM's tokenizer) with a model record
that makes it a trained single-label run's model: memory is what is measured, and with a tiny model the texts,
ids and scores dominate it, as they do for a pool of millions of rows with any model. For each size, a pool CSV of
that many distinct texts is made from the text column of DATA (AG News train.csv), each repeat of a row followed by
its repeat number; every strategy then suggests 32 rows from it in a fresh process. Reported: wall time (start-up
included), rows per second and the peak resident memory of the process (``wait4``), and that peak relative to the
same strategy on the smallest pool. Prints a Markdown table; the generated files are deleted at the end. Skips
(exit 0) when DATA or the MiniLM package is missing.
"""

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from predict_memory import DEFAULT_DATA, LABELS, command_env, measured, ready, tiny_model

STRATEGIES = ["margin", "entropy", "clustered", "random", "cold_start"]


def distinct_pool(source: Path, target: Path, rows: int) -> None:
    """``rows`` distinct texts: the texts of ``source``, then again each followed by " 1", " 2", ..."""
    with source.open(encoding="utf-8", newline="") as f:
        table = csv.reader(f)
        column = next(table).index("text")
        texts = [row[column] for row in table]
    with target.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["text"])
        for i in range(rows):
            repeat, row = divmod(i, len(texts))
            writer.writerow([texts[row] + (f" {repeat}" if repeat else "")])


def suggest_measured(model: Path, pool: Path, output: Path, strategy: str, env: Dict[str, str]) -> Dict:
    command = [sys.executable, "-m", "finetune.suggest", str(model), str(pool), "--strategy", strategy]
    result = measured([*command, "--n", "32", "--output", str(output), "--overwrite"], output, env)
    result.pop("printed")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="10000,1000000", help="comma-separated sizes; the first is the reference")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--tmp", type=Path, default=None, help="where the generated files go")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS; default 1)")
    args = parser.parse_args()
    if not ready(args.data):
        return
    from finetune.runs.model_folder import ModelRecord

    env = command_env(args.threads)
    sizes, strategies = [int(r) for r in args.rows.split(",")], args.strategies.split(",")
    work = Path(tempfile.mkdtemp(prefix="finetune-suggest-memory-", dir=args.tmp))
    results: List[Dict] = []
    try:
        model = work / "tiny-bert"
        tiny_model(model)
        record = ModelRecord(kind="single_label", labels=LABELS, max_length=128)
        (model / "finetune.json").write_text(json.dumps(record.as_dict()))  # a trained run's model, as far as it says
        for rows in sizes:
            pool = work / f"pool_{rows}.csv"
            distinct_pool(args.data, pool, rows)
            for strategy in strategies:
                result = suggest_measured(model, pool, work / "out.csv", strategy, env)
                if result["written"] != 32:
                    sys.exit(f"{strategy} on {rows} rows wrote {result['written']} rows, not 32")
                result.update(rows=rows, strategy=strategy, mb=pool.stat().st_size / 2**20)
                results.append(result)
                print(f"{rows} rows, {strategy}: {result}", file=sys.stderr, flush=True)
            pool.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import torch  # only for the versions line

    reference = {r["strategy"]: r["peak_rss_mb"] for r in results if r["rows"] == sizes[0]}
    print(
        f"Pools of distinct texts from {args.data}; tiny random BERT, MiniLM tokenizer; 32 rows suggested; "
        f"torch {torch.__version__}, {args.threads} thread(s) on {os.cpu_count()} CPU cores.\n"
    )
    print(f"| strategy | pool rows | pool CSV | wall time | rows/s | peak RSS | vs {sizes[0]:,} rows |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['strategy']} | {r['rows']:,} | {r['mb']:.0f} MB | {r['seconds']:.0f} s | "
            f"{r['rows'] / r['seconds']:,.0f} | {r['peak_rss_mb']:.0f} MB | "
            f"{r['peak_rss_mb'] / reference[r['strategy']]:.2f}x |"
        )


if __name__ == "__main__":
    main()
