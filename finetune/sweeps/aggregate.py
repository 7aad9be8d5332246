"""A sweep's leaderboard by configuration: the jobs that differ only in ``seed`` or ``task.fold``
are one configuration, summarised by n, mean, standard deviation and a 95% confidence interval.

Written when the sweep ends, beside ``summary.csv``: ``summary_by_config.csv`` / ``.md``,
``summary.png`` (each configuration's mean and interval, its runs as dots) and, when two
configurations ran, ``comparison.json`` (the best two, compared by ``finetune.compare``).
"""

import csv
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from finetune.files import replaced_atomically, write_json, write_text
from finetune.sweeps.columns import columns_of, table_text
from finetune.tasks.metrics import greater_is_better

log = logging.getLogger("finetune")
REPEATS = ("seed", "task.fold")  # overrides that repeat a configuration rather than change it
CONFIDENCE = 0.95


def configuration(overrides: str) -> str:
    """The overrides of a job without those that only repeat it (seed, fold)."""
    return " ".join(o for o in overrides.split() if o.split("=", 1)[0].lstrip("+~") not in REPEATS)


def statistics(values: List[float]) -> Dict[str, Optional[float]]:
    """Mean, sample standard deviation and the 95% t-interval of the mean (None where n is too small)."""
    import numpy as np
    import scipy.stats

    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "ci_low": None, "ci_high": None}
    mean = float(np.mean(values))
    if n == 1:
        return {"mean": mean, "std": None, "ci_low": None, "ci_high": None}
    std = float(np.std(values, ddof=1))
    half = float(scipy.stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def by_configuration(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per (task, configuration), best mean of the task's metric first; failed jobs count in ``failed``."""
    scores = [c for c in columns_of(rows) if c.startswith(("val_", "test_")) and not c.endswith("_loss")]
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((str(row["task"]), configuration(row["overrides"])), []).append(row)
    summaries = []
    for (task, config), members in groups.items():
        done = [r for r in members if r["status"] == "completed"]
        summary: Dict[str, Any] = {
            "config": config,
            "task": task,
            "metric": members[0]["metric"],
            "n": len(done),
            "failed": len(members) - len(done),
        }
        for column in scores:
            values = [float(r[column]) for r in done if r.get(column) is not None]
            if values:
                summary.update({f"{column}_{k}": v for k, v in statistics(values).items()})
        summary["scores"] = [r.get("score") for r in done]  # the runs, for the picture
        summary["run_folders"] = [r["run_folder"] for r in done]
        summaries.append(summary)

    def key(summary: Dict[str, Any]):
        mean = summary.get(f"val_{summary['metric']}_mean")
        if mean is None:
            return (summary["task"], 1, 0.0)
        return (summary["task"], 0, -mean if greater_is_better(summary["metric"]) else mean)

    return sorted(summaries, key=key)


def write_by_configuration(sweep_dir: Path, rows: List[Dict[str, Any]]) -> Optional[str]:
    """Write the files of the module doc when some configuration ran more than once; return the markdown, else None."""
    summaries = by_configuration(rows)
    if not any(s["n"] + s["failed"] > 1 for s in summaries):
        return None
    scores = [c[: -len("_mean")] for c in dict.fromkeys(k for s in summaries for k in s) if c.endswith("_mean")]
    columns = [
        "config",
        "task",
        "metric",
        "n",
        "failed",
        *(f"{c}_{k}" for c in scores for k in ("mean", "std", "ci_low", "ci_high")),
        "run_folders",
    ]
    with (
        replaced_atomically(sweep_dir / "summary_by_config.csv") as tmp,
        tmp.open("w", newline="", encoding="utf-8") as f,
    ):
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**s, "run_folders": " ".join(s["run_folders"])} for s in summaries)
    shared = set.intersection(*(set(s["config"].split()) for s in summaries))
    shown = [
        {
            **s,
            "config": " ".join(o for o in s["config"].split() if o not in shared) or "(all)",
            **{c: _cell(s, c) for c in scores},
        }
        for s in summaries
    ]
    text = (
        f"# Sweep {sweep_dir}, by configuration\n\n"
        f"Each cell: mean ± standard deviation [{CONFIDENCE:.0%} t-interval of the mean] "
        f"over the jobs that differ only in {' or '.join(REPEATS)}; n = finished jobs.\n\n"
        f"{table_text(shown, ['config', 'task', 'metric', 'n', 'failed', *scores])}\n"
    )
    figure = draw(sweep_dir / "summary.png", shown, summaries)
    text += f"\n![each configuration's mean and interval, its runs as dots]({figure.name})\n"
    comparison = compare_best_two(sweep_dir, summaries)
    if comparison:
        text += (
            "\n## The best two configurations\n\n"
            f"A: `{shown[0]['config']}`, B: `{shown[1]['config']}`\n\n```\n{comparison}\n```\n"
        )
    write_text(sweep_dir / "summary_by_config.md", text)
    return text


def _cell(summary: Dict[str, Any], column: str) -> str:
    mean, std, low, high = (summary.get(f"{column}_{k}") for k in ("mean", "std", "ci_low", "ci_high"))
    if mean is None:
        return ""
    if std is None:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f} [{low:.4f}, {high:.4f}]"


def draw(path: Path, shown: List[Dict[str, Any]], summaries: List[Dict[str, Any]]) -> Path:
    """Each configuration's validation metric: its mean with the 95% interval, and its runs as dots."""
    import numpy as np

    from finetune.tasks.figures import figure

    fig, axes = figure((8, max(2.5, 0.6 * len(summaries) + 1.5)))
    rng = np.random.default_rng(0)  # the dots' vertical jitter, so equal scores stay visible
    for y, summary in enumerate(summaries):
        mean = summary.get(f"val_{summary['metric']}_mean")
        if mean is None:
            continue
        low, high = summary.get(f"val_{summary['metric']}_ci_low"), summary.get(f"val_{summary['metric']}_ci_high")
        error = [[mean - low], [high - mean]] if low is not None else None
        axes.errorbar(
            [mean],
            [y],
            xerr=error,
            fmt="o",
            color="tab:blue",
            markersize=8,
            capsize=4,
            label="mean, 95% interval" if y == 0 else None,
        )
        values = [v for v in summary["scores"] if v is not None]
        axes.scatter(
            values,
            y + rng.uniform(-0.12, 0.12, len(values)),
            color="tab:orange",
            s=18,
            zorder=3,
            label="runs" if y == 0 else None,
        )
    labels = [f"{s['config']} ({s['task']}, n={summaries[i]['n']})" for i, s in enumerate(shown)]
    axes.set_yticks(range(len(summaries)), labels, fontsize=8)
    axes.set_ylim(len(summaries) - 0.5, -0.5)  # best on top
    metrics = sorted({s["metric"] for s in summaries})
    axes.set_xlabel(f"validation {', '.join(metrics)}")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    axes.set_title("By configuration: mean and 95% interval over seeds / folds", fontsize=10)
    fig.tight_layout()
    import matplotlib.pyplot as plt

    with replaced_atomically(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def compare_best_two(sweep_dir: Path, summaries: List[Dict[str, Any]]) -> Optional[str]:
    """``comparison.json``: the best two configurations of the best-ranked task, paired (finetune.compare)."""
    from finetune.errors import FinetuneError
    from finetune.sweeps.compare import compare, describe

    ranked = [s for s in summaries if s["n"] and s["task"] == summaries[0]["task"]]
    if len(ranked) < 2:
        return None
    try:
        result = compare(ranked[0]["run_folders"], ranked[1]["run_folders"])
    except FinetuneError as error:
        log.warning("The best two configurations were not compared: %s", error)
        return None
    write_json(
        sweep_dir / "comparison.json", {"a_config": ranked[0]["config"], "b_config": ranked[1]["config"], **result}
    )
    return describe(result)
