"""Is configuration A better than B, or only luckier? A paired test on the rows both were scored on.

    python -m finetune.compare RUN_OR_SWEEP_A RUN_OR_SWEEP_B [--split test] [--metric accuracy]

Each side is a run folder, a sweep folder (all its finished runs: the seeds or folds of one
configuration) or run folders joined by commas. It reads the predictions each run saved
(``predictions_<split>.parquet``, an older run's column names mapped), so nothing is retrained. The result
is written to ``--output`` (an existing file only with ``--overwrite``) and printed as JSON on stdout; the
same in words goes to stderr.

How runs are paired and pooled. Runs are matched by the fingerprint of the rows they were
scored on (``environment.json``: a hash of the split's text and labels). Runs of the same rows
form a group: with a fixed test file, every seed of A and B is in one group; with validation
carved from train (which depends on the seed), or with folds, each seed or fold is a group of
its own. A run of one side whose rows no run of the other side was scored on is refused.

- The difference is mean(metric of A's runs) - mean(metric of B's runs) within each group,
  averaged over the groups weighted by their rows.
- Paired bootstrap: the rows of each group are resampled with replacement, the same draw for A
  and B; the 95% interval is the 2.5 and 97.5 percentiles of the resampled difference, and the
  p-value is twice the smaller share of resamples on either side of 0 (seeds and folds are kept,
  rows resampled: the interval is about the rows, the spread over seeds is in summary_by_config).
- McNemar's test (classification: a row is right when accuracy counts it right) compares one
  run with one run: it counts the rows only A gets right and the rows only B gets right, summed
  over the groups, with the exact binomial test when they are fewer than 25, else the chi-square
  test with continuity correction. It is left out when a group holds several runs of a side
  (seeds on one fixed test file): counting a row once per seed would overstate the evidence,
  and a majority vote tests an ensemble, not the configuration. The bootstrap covers that case.
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from finetune.errors import FinetuneError
from finetune.files import refuse_to_overwrite, write_json
from finetune.runs.examples import read_predictions
from finetune.runs.saved import ENVIRONMENT_FILE, METRICS_FILE, SavedRun
from finetune.tasks.registry import best_metric
from finetune.tasks.vocabulary import CORRECT

RESAMPLES = 2000
EXACT_BELOW = 25  # discordant rows: fewer than this, McNemar's exact binomial test; else chi-square


@dataclass
class Run:
    folder: Path
    task: Any  # the run's task config
    fingerprints: Dict[str, str] = field(default_factory=dict)  # split -> sha256 of its rows (text and labels)


def runs_of(spec: str) -> List[Path]:
    """The finished run folders a command-line argument names: a run, a sweep, or runs joined by commas."""
    runs = []
    for part in filter(None, spec.split(",")):
        folder = Path(part).expanduser()
        if SavedRun(folder).is_finished:
            runs.append(folder)
        elif folder.is_dir():
            runs.extend(sorted(p for p in folder.iterdir() if SavedRun(p).is_finished))
        else:
            raise FinetuneError(f"{part}: no such folder.")
    if not runs:
        raise FinetuneError(
            f"{spec}: holds no finished run (a run folder has {METRICS_FILE}; a sweep folder holds run folders)."
        )
    return runs


def load_run(folder: Path) -> Run:

    run = SavedRun(folder)
    environment = run.environment()
    return Run(folder, run.task(), {split: data["sha256"] for split, data in environment["data"].items()})


def kind_of(task):
    from finetune.tasks.registry import KINDS

    return KINDS[task.kind](list(task.label_names), list(task.metrics), None, task.label_separator)


def compare(
    runs_a: Sequence[Path],
    runs_b: Sequence[Path],
    split: Optional[str] = None,
    metric: Optional[str] = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Dict[str, Any]:
    """The paired comparison of A and B (see the module doc); raises FinetuneError when they cannot be compared."""
    import numpy as np

    from finetune.tasks.metrics import greater_is_better

    a, b = [load_run(Path(f)) for f in runs_a], [load_run(Path(f)) for f in runs_b]
    kind, split, metric = _what_to_compare(a + b, split, metric)
    groups = _paired_groups(a, b, split)
    rng = np.random.default_rng(seed)
    scored = [_score_group(kind, metric, split, side_a, side_b, rng, resamples) for side_a, side_b in groups.values()]
    weights = [group["rows"] for group in scored]
    w = np.asarray(weights, dtype=float) / sum(weights)
    difference = float(np.dot(w, [group["observed"] for group in scored]))
    resampled = np.dot(w, np.vstack([group["draws"] for group in scored]))
    low, high = np.percentile(resampled, [2.5, 97.5])
    # +1: the observed sample counts as a resample, so p is never exactly 0
    p_bootstrap = min(
        1.0, 2 * min(((resampled <= 0).sum() + 1) / (resamples + 1), ((resampled >= 0).sum() + 1) / (resamples + 1))
    )
    classified = scored[0]["classified"]
    one_each = all(len(side_a) == len(side_b) == 1 for side_a, side_b in groups.values())
    discordant = [sum(group["discordant"][i] for group in scored) for i in (0, 1)]
    return {
        "split": split,
        "metric": metric,
        "greater_is_better": greater_is_better(metric),
        "a": {
            "runs": [str(r.folder) for r in a],
            metric: float(np.mean([s for group in scored for s in group["run_scores"]["a"]])),
        },
        "b": {
            "runs": [str(r.folder) for r in b],
            metric: float(np.mean([s for group in scored for s in group["run_scores"]["b"]])),
        },
        "groups": len(groups),
        "rows": int(sum(weights)),
        "difference": difference,
        "ci95": [float(low), float(high)],
        "bootstrap": {"resamples": resamples, "seed": seed, "p_value": float(p_bootstrap)},
        "mcnemar": _mcnemar(*discordant) if classified and one_each else None,
        "mcnemar_skipped": None
        if not classified or one_each
        else "several runs of a side on the same rows; the bootstrap is the test",
        "pooling": "runs paired by the rows they were scored on; "
        "within each group the mean over its runs, groups weighted by rows; "
        "bootstrap over rows within groups; McNemar summed over groups, only where each group holds one run per side",
    }


def _what_to_compare(runs: List[Run], split: Optional[str], metric: Optional[str]):
    """The runs' kind, the split (test when every run has labeled test predictions, else validation) and the metric.

    Refused if the runs' tasks differ.
    """
    from finetune.tasks.metrics import METRICS

    first = runs[0].task
    for run in runs[1:]:
        if (run.task.kind, list(run.task.label_names)) != (first.kind, list(first.label_names)):
            raise FinetuneError(
                f"{run.folder} and {runs[0].folder} are runs of different tasks (kind or labels differ): "
                "nothing to compare."
            )
    kind = kind_of(first)
    if split is None:
        split = "test" if all(SavedRun(r.folder).predictions_path("test").is_file() for r in runs) else "validation"
    missing = [str(r.folder) for r in runs if not SavedRun(r.folder).predictions_path(split).is_file()]
    if missing:
        raise FinetuneError(
            f"No {SavedRun(Path()).predictions_path(split).name} in {', '.join(missing)}: "
            f"the {split} split was not scored there "
            "(unlabeled, or the run is older than saved predictions)."
        )
    metric = metric or best_metric(first)
    if metric == "loss":  # not saved per row: the kind's first metric instead
        metric = kind.metrics[0]
    if metric not in METRICS or kind.name not in METRICS[metric].kinds:
        raise FinetuneError(
            f"--metric {metric}: not a metric of a {kind.name} task; "
            f"use one of {', '.join(m for m, d in METRICS.items() if kind.name in d.kinds)}."
        )
    return kind, split, metric


def _score_group(
    kind, metric: str, split: str, side_a: List[Run], side_b: List[Run], rng, resamples: int
) -> Dict[str, Any]:
    """One group of runs scored on the same rows: the observed difference, its bootstrap draws, McNemar's counts."""
    import numpy as np

    from finetune.tasks.metrics import compute

    tables = {side: [read_predictions(r.folder, split) for r in runs] for side, runs in (("a", side_a), ("b", side_b))}
    gold, _ = kind.gold_and_predicted(tables["a"][0])
    predicted = {side: [kind.gold_and_predicted(t)[1] for t in ts] for side, ts in tables.items()}
    for side, ts in tables.items():
        for run, table in zip(side_a if side == "a" else side_b, ts):
            if not np.array_equal(kind.gold_and_predicted(table)[0], gold):
                raise FinetuneError(
                    f"{run.folder}: its {split} labels differ from {side_a[0].folder}'s "
                    "though the rows' fingerprints agree; rerun it."
                )
    rows = len(gold)
    indices = rng.integers(0, rows, size=(resamples, rows))

    def score(side: str, idx=None) -> float:
        return float(
            np.mean(
                [
                    compute([metric], gold if idx is None else gold[idx], p if idx is None else p[idx])[metric]
                    for p in predicted[side]
                ]
            )
        )

    if metric == "accuracy":  # mean over runs of accuracy = accuracy of the per-row share of runs that are right
        right = {
            side: np.mean([np.asarray(t[CORRECT], dtype=float) for t in ts], axis=0) for side, ts in tables.items()
        }
        draws = (right["a"] - right["b"])[indices].mean(axis=1)
    else:
        draws = np.array([score("a", idx) - score("b", idx) for idx in indices])
    classified = CORRECT in tables["a"][0].columns
    discordant = [0, 0]
    if classified and len(side_a) == len(side_b) == 1:
        right = {side: np.asarray(ts[0][CORRECT], dtype=bool) for side, ts in tables.items()}
        discordant = [int((right["a"] & ~right["b"]).sum()), int((~right["a"] & right["b"]).sum())]
    return {
        "rows": rows,
        "observed": score("a") - score("b"),
        "draws": draws,
        "classified": classified,
        "discordant": discordant,
        "run_scores": {side: [compute([metric], gold, p)[metric] for p in predicted[side]] for side in ("a", "b")},
    }


def _paired_groups(a: List[Run], b: List[Run], split: str) -> Dict[str, tuple]:
    """Runs of A and of B by the rows they were scored on; every run must have a partner on the other side."""
    groups: Dict[str, tuple] = {}
    for side, runs in ((0, a), (1, b)):
        for run in runs:
            fingerprint = run.fingerprints.get(split)
            groups.setdefault(fingerprint, ([], []))[side].append(run)
    unpaired = [
        (side, runs)
        for fingerprint, pair in groups.items()
        for side, runs in zip("AB", pair)
        if not pair[0] or not pair[1]
    ]
    if unpaired:
        side, runs = unpaired[0]
        other = "B" if side == "A" else "A"
        raise FinetuneError(
            f"Runs on different rows: the {split} rows of {', '.join(str(r.folder) for r in runs)} ({side}) "
            f"are not the rows of any run of {other} (their fingerprints in {ENVIRONMENT_FILE} differ). "
            "A paired test needs the same rows on both sides: compare runs of the same data, "
            "the same seed when validation is carved from train (the carve depends on the seed), "
            "and the same task.folds/task.fold."
        )
    return groups


def _mcnemar(only_a: int, only_b: int) -> Dict[str, Any]:
    """McNemar's test on the rows exactly one side gets right."""
    import scipy.stats

    total = only_a + only_b
    if total == 0:
        test, p = "none: both sides right and wrong on the same rows", 1.0
    elif total < EXACT_BELOW:
        test, p = "exact binomial", scipy.stats.binomtest(only_a, total, 0.5).pvalue
    else:
        test, p = (
            "chi-square with continuity correction",
            scipy.stats.chi2.sf((abs(only_a - only_b) - 1) ** 2 / total, df=1),
        )
    return {"only_a_right": only_a, "only_b_right": only_b, "test": test, "p_value": float(min(1.0, p))}


def describe(result: Dict[str, Any]) -> str:
    """The comparison in a few lines."""
    metric = result["metric"]
    lines = [
        f"A: {len(result['a']['runs'])} run(s), mean {metric} {result['a'][metric]:.4f}",
        f"B: {len(result['b']['runs'])} run(s), mean {metric} {result['b'][metric]:.4f}",
        f"{result['split']} split, {result['rows']} rows in {result['groups']} group(s) of paired runs",
        f"A - B = {result['difference']:+.4f} {metric}, "
        f"95% interval [{result['ci95'][0]:+.4f}, {result['ci95'][1]:+.4f}] "
        f"(paired bootstrap, {result['bootstrap']['resamples']} resamples), p = {result['bootstrap']['p_value']:.3g}",
    ]
    mcnemar = result.get("mcnemar")
    if result.get("mcnemar_skipped"):
        lines.append(f"McNemar: not computed ({result['mcnemar_skipped']})")
    if mcnemar:
        lines.append(
            "McNemar (right or wrong per row, as accuracy counts): "
            f"{mcnemar['only_a_right']} rows only A gets right, {mcnemar['only_b_right']} only B; "
            f"p = {mcnemar['p_value']:.3g} ({mcnemar['test']})"
        )
    if not result["greater_is_better"]:
        lines.append(f"({metric}: lower is better)")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m finetune.compare",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("a", help="run folder, sweep folder, or run folders joined by commas")
    parser.add_argument("b", help="the same, for the other side")
    parser.add_argument(
        "--split",
        help="the split to compare on (default: test if every run scored a labeled test split, else validation)",
    )
    parser.add_argument("--metric", help="default: the task's metric for the best model")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples (default {RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("comparison.json"),
        help="where to write the result (default ./comparison.json)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error(f"--resamples {args.resamples}: must be an integer >= 1, e.g. --resamples {RESAMPLES}")
    try:
        refuse_to_overwrite(args.output, args.overwrite)
        result = compare(runs_of(args.a), runs_of(args.b), args.split, args.metric, args.resamples, args.seed)
    except FinetuneError as error:
        sys.exit(f"finetune.compare: {error}")
    write_json(args.output, result)
    print(json.dumps(result))
    print(f"{describe(result)}\nWritten to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
