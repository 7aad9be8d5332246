"""The label-suggest-retrain loop, simulated on a labeled file: how far each strategy gets a model per label.

    python -m finetune.simulate_labeling FILE --test TEST [--per-class 8] [--rounds 4] [--n 32] [--pool 10000]
        [--strategies clustered margin random] [--seeds 0 1 2] [--out labeling_curve] [-- model=minilm ...]

For each seed: ``--per-class`` rows of each label of FILE are the first labels; ``--pool`` other rows of FILE
(never a text of TEST) are the unlabeled pool, their labels hidden. Round 0 trains on the first labels
(``run.py task=file``, the RUN_OVERRIDES after ``--`` added); then, for each strategy and each of ``--rounds``
rounds, ``finetune.suggest`` picks ``--n`` pool rows with the latest run, their labels are revealed, and a new run
trains on every label so far. Every run is scored on TEST.

The folder ``--out`` holds each run and, once all finished (with ``--resume``, a run already finished is not trained
again; an existing ``--out`` is refused without ``--resume`` or ``--overwrite``, which starts it afresh):

- ``rounds.jsonl``: one line per run (seed, strategy, round, labels, test scores, seconds to suggest and train);
- ``curve.md`` / ``curve.png``: the learning curves, mean and standard deviation over seeds per strategy; the
  area under each curve (the mean accuracy over the labels spent); per round, each strategy against random,
  paired on the test rows (``finetune.compare``'s bootstrap); and when labeling could have stopped: the
  agreement of consecutive rounds' predictions (small-text's ``KappaAverage``: Cohen's kappa of 3 consecutive
  pairs of rounds averaging 0.99 or more; Bloodgood and Vijay-Shanker 2009), read on TEST's rows without their
  labels, as a person could read it on rows they keep aside unlabeled.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

import numpy as np

from finetune.errors import FinetuneError
from finetune.labeling.curve import START, report
from finetune.labeling.pool import has_text, texts_of
from finetune.labeling.strategies import STRATEGIES, row_id
from finetune.runs.model_folder import ModelRecord
from finetune.runs.saved import SavedRun
from finetune.serving.tables import read_chunks

# Each round trains as finetune-train does (finetune/run.py), from the folder above the package: the same package.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
ROUNDS_FILE = "rounds.jsonl"
SIMULATION_ENTRY = re.compile(rf"\.?({re.escape(ROUNDS_FILE)}|curve\.\w+|seed-?\d+)(\.tmp)?")  # what --out holds


def check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an --out that holds anything, unless ``resume`` (continue the simulation in it) or ``overwrite``
    (remove it and start afresh); a folder of anything else than a simulation is never touched. Before any work."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise FinetuneError(f"--out {out} is a file; choose a folder.")
    if not all(SIMULATION_ENTRY.fullmatch(entry.name) for entry in out.iterdir()):
        raise FinetuneError(
            f"--out {out} exists and holds files of something else than a simulation; choose a new folder."
        )
    if resume:
        return
    if not overwrite:
        raise FinetuneError(
            f"--out {out} exists; add --overwrite to replace it, --resume to continue its simulation "
            "(its finished runs are kept), or choose another folder."
        )
    shutil.rmtree(out)


def read_labeled(path: Path, text_fields: List[str], label_field: str):
    """A labeled file as a table: ``id`` (strategies.row_id), the text column(s) and the label; one row per text."""
    import pandas as pd

    record = ModelRecord(kind="", labels=[], text_fields=text_fields, label_field=label_field)
    table = pd.concat(list(read_chunks(path, record)), ignore_index=True)
    missing = [c for c in [*text_fields, label_field] if c not in table.columns]
    if missing:
        raise FinetuneError(f"{path}: no column {missing}; its columns are {list(table.columns)}.")
    table = table[has_text(table, text_fields) & table[label_field].notna()]
    table.insert(0, "id", [row_id(t) for t in texts_of(table, text_fields)])
    return table.drop_duplicates("id").reset_index(drop=True)[["id", *text_fields, label_field]]


@dataclass
class Plan:
    """One seed's split of the labeled file: the first labeled rows and the pool (both tables with ``id``)."""

    seed: int
    start: Any
    pool: Any

    @classmethod
    def draw(cls, table: Any, test_ids: Set[str], label_field: str, per_class: int, pool_rows: int, seed: int):
        """``per_class`` rows of each label to start with and ``pool_rows`` others as the pool, none a test text."""
        rng = np.random.default_rng(seed)
        table = table[~table["id"].isin(test_ids)]
        start = []
        for label, rows in sorted(table.groupby(label_field), key=lambda item: str(item[0])):
            if len(rows) < per_class:
                raise FinetuneError(f"label {label!r} has {len(rows)} rows, fewer than --per-class {per_class}.")
            start.append(rows.iloc[rng.permutation(len(rows))[:per_class]])
        first = pd_concat(start)
        rest = table[~table["id"].isin(set(first["id"]))]
        if len(rest) < pool_rows:
            raise FinetuneError(f"--pool {pool_rows}: only {len(rest)} rows are left besides the first labels.")
        pool = rest.iloc[np.sort(rng.permutation(len(rest))[:pool_rows])].reset_index(drop=True)
        return cls(seed, first, pool)


def pd_concat(frames: List[Any]):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def revealed(plan: Plan, labeled_ids: Set[str], suggested: Sequence[str]):
    """The pool rows of the suggested ids, with their labels; refuses an id outside the pool or labeled before."""
    again = [i for i in suggested if i in labeled_ids]
    outside = [i for i in suggested if i not in set(plan.pool["id"])]
    if again or outside or len(set(suggested)) != len(suggested):
        raise FinetuneError(
            f"seed {plan.seed}: suggestions outside the pool {outside[:3]} or labeled before {again[:3]} "
            "or repeated: the loop's bookkeeping is broken."
        )
    return plan.pool.set_index("id").loc[list(suggested)].reset_index()


def train(labeled_csv: Path, test: Path, run_dir: Path, seed: int, overrides: Sequence[str]) -> Dict[str, Any]:
    """``run.py task=file`` on the labels so far, scored on ``test``: its test metrics and seconds."""
    command = [
        sys.executable,
        "-m",
        "finetune.run",
        "task=file",
        f"file={labeled_csv}",
        f"test_file={test}",
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    started = time.perf_counter()
    with (run_dir.parent / f"{run_dir.name}.log").open("w") as log:
        code = subprocess.run(command, cwd=PACKAGE_ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise FinetuneError(f"training {run_dir} failed (exit {code}); see {run_dir.parent / (run_dir.name + '.log')}")
    metrics = SavedRun(run_dir).metrics()["test"]
    return {"metrics": metrics, "train_s": time.perf_counter() - started}


def suggested_ids(run_dir: Path, pool_csv: Path, strategy: str, n: int, seed: int, out: Path) -> List[str]:
    """``finetune.suggest`` with the latest run: the ids of the rows it suggests."""
    import pandas as pd

    from finetune.labeling.suggest import main as suggest

    argv = [str(run_dir), str(pool_csv), "--n", str(n), "--strategy", strategy, "--seed", str(seed)]
    if suggest([*argv, "--output", str(out), "--overwrite"]) != 0:
        raise FinetuneError(f"finetune.suggest failed on {run_dir} ({strategy})")
    return pd.read_csv(out, dtype={"id": str})["id"].tolist()


class Loop:
    """The simulation's state on disk: every run in ``out``, one line per finished run in ``rounds.jsonl``."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.out = args, args.out.resolve()  # each round runs from the folder above the package
        self.out.mkdir(parents=True, exist_ok=True)
        self.records = self._read_records()

    def _read_records(self) -> Dict[tuple, Dict[str, Any]]:
        path = self.out / ROUNDS_FILE
        lines = path.read_text().splitlines() if path.is_file() else []
        return {(r["seed"], r["strategy"], r["round"]): r for r in map(json.loads, lines)}

    def record(self, row: Dict[str, Any]) -> None:
        self.records[(row["seed"], row["strategy"], row["round"])] = row
        with (self.out / ROUNDS_FILE).open("a") as f:
            f.write(json.dumps(row) + "\n")

    def trained(self, plan: Plan, strategy: str, round_: int, labeled: Any, suggest_s: float) -> Dict[str, Any]:
        """The run of ``round_`` on the ``labeled`` rows (trained unless it finished before)."""
        key = (plan.seed, strategy, round_)
        if key in self.records:
            return self.records[key]
        folder = self.out / f"seed{plan.seed}" / strategy
        folder.mkdir(parents=True, exist_ok=True)
        labeled_csv = folder / f"labeled_round{round_}.csv"
        labeled.drop(columns="id").to_csv(labeled_csv, index=False)
        run_dir = folder / f"round{round_}"
        if run_dir.exists():  # a run without its line in rounds.jsonl did not finish: start it again
            shutil.rmtree(run_dir)
        result = train(labeled_csv, self.args.test.resolve(), run_dir, plan.seed, self.args.overrides)
        row = {
            "seed": plan.seed,
            "strategy": strategy,
            "round": round_,
            "labels": len(labeled),
            "ids": labeled["id"].tolist(),
            **{k: result["metrics"][k] for k in ("accuracy", "f1_macro") if k in result["metrics"]},
            "suggest_s": suggest_s,
            "train_s": result["train_s"],
            "run": str(run_dir),
        }
        self.record(row)
        return row

    def run_seed(self, plan: Plan) -> None:
        args = self.args
        pool_csv = self.out / f"seed{plan.seed}" / "pool.csv"
        pool_csv.parent.mkdir(parents=True, exist_ok=True)
        plan.pool[args.text_fields].to_csv(pool_csv, index=False)  # the labels stay hidden
        first = self.trained(plan, START, 0, plan.start, 0.0)
        for strategy in args.strategies:
            labeled, latest = plan.start, first
            for round_ in range(1, args.rounds + 1):
                key = (plan.seed, strategy, round_)
                if key in self.records:
                    latest = self.records[key]
                    labeled = pd_concat([plan.start, plan.pool[plan.pool["id"].isin(set(latest["ids"]))]])
                    labeled = labeled.set_index("id").loc[latest["ids"]].reset_index()
                    continue
                started = time.perf_counter()
                out = self.out / f"seed{plan.seed}" / strategy / f"suggested_round{round_}.csv"
                ids = suggested_ids(Path(latest["run"]), pool_csv, strategy, args.n, plan.seed, out)
                suggest_s = time.perf_counter() - started
                labeled = pd_concat([labeled, revealed(plan, set(labeled["id"]), ids)])
                latest = self.trained(plan, strategy, round_, labeled, suggest_s)
                print(
                    f"seed {plan.seed} {strategy} round {round_}: {latest['labels']} labels, "
                    f"accuracy {latest['accuracy']:.4f} (suggest {suggest_s:.0f} s, train {latest['train_s']:.0f} s)",
                    flush=True,
                )


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="python -m finetune.simulate_labeling",
        description="Simulate label-suggest-retrain rounds on a labeled file; write the learning curves.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("file", type=Path, help="a labeled file: the first labels and the pool are drawn from it")
    parser.add_argument("--test", type=Path, required=True, help="a labeled file every run is scored on")
    parser.add_argument("--text-fields", nargs="+", default=["text"], help="default: text")
    parser.add_argument("--label-field", default="label", help="default: label")
    parser.add_argument("--per-class", type=int, default=8, help="first labels per class (default 8)")
    parser.add_argument("--rounds", type=int, default=4, help="default 4")
    parser.add_argument("--n", type=int, default=32, help="rows labeled per round (default 32)")
    parser.add_argument("--pool", type=int, default=10_000, help="unlabeled pool rows (default 10000)")
    parser.add_argument(
        "--strategies",
        nargs="+",
        choices=[s for s in STRATEGIES if STRATEGIES[s].needs_run] + ["random"],
        default=["clustered", "margin", "random"],
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("labeling_curve"), help="default: labeling_curve")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true", help="continue the simulation in --out: finished runs kept")
    existing.add_argument("--overwrite", action="store_true", help="replace --out if it holds a simulation")
    args = parser.parse_args(argv)
    args.overrides = overrides
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        check_out(args.out, args.resume, args.overwrite)
        test = read_labeled(args.test, args.text_fields, args.label_field)
        table = read_labeled(args.file, args.text_fields, args.label_field)
        loop = Loop(args)
        for seed in args.seeds:
            plan = Plan.draw(table, set(test["id"]), args.label_field, args.per_class, args.pool, seed)
            loop.run_seed(plan)
        records = [r for r in loop.records.values() if r["seed"] in args.seeds]
        text = report(records, args.strategies, table[args.label_field].nunique(), args.out)
    except FinetuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(text)
    print(f"Curves, tests and picture: {args.out}/curve.md, curve.json, curve.png")
    return 0
