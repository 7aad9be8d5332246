"""The labeling loop's report (finetune/labeling/loop.py): learning curves, their areas, each strategy against
the control paired on the test rows, and when labeling could have stopped."""

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from finetune.files import write_json, write_text
from finetune.runs.examples import read_predictions
from finetune.tasks.vocabulary import PREDICTED, probability_labels

START = "start"  # round 0's strategy name: the first labels, shared by every strategy of a seed
STOP_KAPPA, STOP_WINDOW = 0.99, 3  # small-text's KappaAverage defaults


def curves(records: List[Dict[str, Any]], strategies: Sequence[str]) -> Dict[str, Any]:
    """Per strategy: labels per round, mean and sd of accuracy over seeds, the area under each seed's curve."""
    seeds = sorted({r["seed"] for r in records})
    by_key = {(r["seed"], r["strategy"], r["round"]): r for r in records}
    result = {}
    for strategy in strategies:
        rounds = sorted({r["round"] for r in records if r["strategy"] == strategy} | {0})
        table = np.array(
            [[by_key[(s, START if k == 0 else strategy, k)]["accuracy"] for k in rounds] for s in seeds], dtype=float
        )
        labels = [by_key[(seeds[0], START if k == 0 else strategy, k)]["labels"] for k in rounds]
        span = max(labels[-1] - labels[0], 1)
        widths = np.diff(labels)
        areas = [float(np.sum(widths * (row[1:] + row[:-1]) / 2) / span) for row in table]  # the trapezoid rule
        result[strategy] = {
            "labels": labels,
            "mean": table.mean(axis=0).tolist(),
            "std": (table.std(axis=0, ddof=1) if len(seeds) > 1 else np.zeros(len(rounds))).tolist(),
            "area": areas,
            "area_mean": float(np.mean(areas)),
            "seconds_per_round": float(
                np.mean([r["suggest_s"] + r["train_s"] for r in records if r["strategy"] == strategy])
            ),
        }
    return result


def stopping(records: List[Dict[str, Any]], strategy: str, seed: int, num_classes: int) -> Optional[int]:
    """The first round at which small-text's KappaAverage says to stop (predictions on TEST agree), or None."""
    from small_text.stopping_criteria import KappaAverage

    criterion = KappaAverage(num_classes, window_size=STOP_WINDOW, kappa=STOP_KAPPA)
    runs = sorted(
        (r for r in records if r["seed"] == seed and r["strategy"] in (START, strategy)), key=lambda r: r["round"]
    )
    for row in runs:
        table = read_predictions(Path(row["run"]), "test")
        labels = probability_labels(table.columns)
        if criterion.stop(predictions=table[PREDICTED].map(labels.index).to_numpy()):
            return row["round"]
    return None


def paired(records: List[Dict[str, Any]], strategy: str, control: str, round_: int) -> Dict[str, Any]:
    """``strategy`` against ``control`` at one round: finetune.compare on their runs over all seeds (same test rows)."""
    from finetune.sweeps.compare import compare

    runs = {
        s: [Path(r["run"]) for r in records if r["strategy"] == s and r["round"] == round_] for s in (strategy, control)
    }
    result = compare(runs[strategy], runs[control], split="test", metric="accuracy")
    return {"difference": result["difference"], "ci95": result["ci95"], "p_value": result["bootstrap"]["p_value"]}


def report(records: List[Dict[str, Any]], strategies: Sequence[str], num_classes: int, out: Path) -> str:
    """curve.md, curve.json and curve.png in ``out``; the Markdown, to print."""
    found = curves(records, strategies)
    seeds = sorted({r["seed"] for r in records})
    control = "random" if "random" in strategies else None
    rounds = range(1, len(found[strategies[0]]["labels"]))
    tests = {s: {k: paired(records, s, control, k) for k in rounds} for s in strategies if control and s != control}
    stops = {s: {seed: stopping(records, s, seed, num_classes) for seed in seeds} for s in strategies}
    lines = [*curve_lines(found, seeds), *control_lines(tests, control, rounds), *stop_lines(stops, seeds)]
    text = "\n".join(lines) + "\n"
    write_text(out / "curve.md", text)
    write_json(out / "curve.json", {"curves": found, "against_control": tests, "stop_round": stops})
    draw(found, out / "curve.png")
    return text


def curve_lines(found: Dict[str, Any], seeds: List[int]) -> List[str]:
    from finetune.markdown import markdown_table

    labels = next(iter(found.values()))["labels"]
    return [
        f"# Labeling curve: test accuracy against labels, mean ± sd over seeds {', '.join(map(str, seeds))}",
        "",
        *markdown_table(
            ["strategy", *[f"{n} labels" for n in labels], "area", "s per round"],
            [
                [
                    s,
                    *[f"{m:.4f} ± {d:.4f}" for m, d in zip(curve["mean"], curve["std"])],
                    f"{curve['area_mean']:.4f}",
                    f"{curve['seconds_per_round']:.0f}",
                ]
                for s, curve in found.items()
            ],
        ),
        "",
        "area: the mean accuracy over the labels spent (the area under the curve divided by its width), "
        "averaged over seeds. s per round: seconds to suggest and to train, per run.",
    ]


def control_lines(tests: Dict[str, Any], control: Optional[str], rounds: range) -> List[str]:
    from finetune.markdown import markdown_table

    if not tests:
        return []
    return [
        "",
        f"## Against {control}, paired on the test rows (bootstrap over rows, seeds pooled)",
        "",
        *markdown_table(
            ["strategy", *[f"round {k}" for k in rounds]],
            [
                [
                    s,
                    *[
                        f"{t['difference']:+.4f} [{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}] p={t['p_value']:.3f}"
                        for t in by_round.values()
                    ],
                ]
                for s, by_round in tests.items()
            ],
        ),
    ]


def stop_lines(stops: Dict[str, Dict[int, Optional[int]]], seeds: List[int]) -> List[str]:
    from finetune.markdown import markdown_table

    return [
        "",
        f"## When to stop: the first round whose last {STOP_WINDOW} changes of the predictions on the test rows "
        f"average a kappa of {STOP_KAPPA} or more",
        "",
        *markdown_table(
            ["strategy", *[f"seed {seed}" for seed in seeds]],
            [[s, *["not yet" if stops[s][seed] is None else str(stops[s][seed]) for seed in seeds]] for s in stops],
        ),
    ]


def draw(found: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, curve in found.items():
        mean, std = np.array(curve["mean"]), np.array(curve["std"])
        axes.plot(curve["labels"], mean, marker="o", label=f"{name} (area {curve['area_mean']:.3f})")
        axes.fill_between(curve["labels"], mean - std, mean + std, alpha=0.15)
    axes.set_xlabel("labeled rows")
    axes.set_ylabel("test accuracy")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
