"""A Hydra callback that writes a sweep's leaderboard when the sweep ends.

It reads what each job left in its folder (``metrics.json``, or ``failed.json``), so it
works the same whether the jobs ran in this process, in local processes or on SLURM.
"""

import csv
import logging
import math
import zipfile
from pathlib import Path
from typing import Any, Dict, List

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from finetune.files import replaced_atomically, write_text
from finetune.runs.saved import SWEEP_SUMMARY, SavedRun
from finetune.sweeps.aggregate import write_by_configuration
from finetune.sweeps.audit import write_label_audit
from finetune.sweeps.columns import columns_of, table_text
from finetune.tasks.metrics import greater_is_better
from finetune.tasks.registry import best_metric

log = logging.getLogger("finetune")
# The files the GLUE server takes, in its order; AX (the diagnostic set) is predicted by the MNLI model.
GLUE_FILES = (
    "CoLA.tsv",
    "SST-2.tsv",
    "MRPC.tsv",
    "STS-B.tsv",
    "QQP.tsv",
    "MNLI-m.tsv",
    "MNLI-mm.tsv",
    "QNLI.tsv",
    "RTE.tsv",
    "WNLI.tsv",
    "AX.tsv",
)


def job_row(job_dir: Path) -> Dict[str, Any]:
    """One leaderboard row from a job folder: a column per split and metric of the job's task."""
    job = SavedRun(job_dir)
    config = job.config(typed=False)
    task = job.task() if job.has_config else config.task
    hydra = job.hydra()
    task_metrics = list(config.task.get("metrics") or [])
    row: Dict[str, Any] = {
        "job": hydra.job.num,
        "overrides": " ".join(job.overrides()),
        "task": hydra.runtime.choices.get("task"),
        "metric": best_metric(task),
        "run_folder": str(job_dir),
        "status": "failed",
        "error": "",
        "predictions": {split: job_dir / name for split, name in (config.task.get("predictions_files") or {}).items()},
    }
    if job.is_finished:
        metrics = job.metrics()
        first = metrics["validation"] or metrics.get("test") or {}  # few labels and a test file: no validation split
        names = task_metrics or [k for k, v in first.items() if isinstance(v, float) and k != "loss"]
        for split, report in metrics.items():
            if split != "train" and report:
                prefix = split.replace("validation", "val", 1)
                row.update({f"{prefix}_{name}": report.get(name) for name in [*names, "loss"]})
        validation_splits = [s for s in metrics if s.startswith("validation") and metrics[s]]
        # GLUE's rule: a task with several metrics (or splits, MNLI) counts their mean
        row["task_score"] = sum(metrics[s][n] for s in validation_splits for n in names) / max(
            len(validation_splits) * len(names), 1
        )
        verdict = metrics["train"].get("baseline_check")
        row.update(
            status="completed",
            score=row.get(f"val_{row['metric']}", row.get(f"test_{row['metric']}")),  # few labels: test only
            train_time_s=metrics["train"]["runtime_s"],
            # above the trivial baseline (finetune/tasks/baseline.py); empty for runs from before the check
            learned="" if verdict is None else "yes" if verdict["learned"] else "NO",
        )
    elif job.failed_path.is_file():
        row["error"] = job.failure()["error"].splitlines()[0]
    else:
        row["error"] = "no metrics: the job was killed or is still running"
    return row


def rank(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Completed jobs first, grouped by task, best validation score first (lowest for loss and mse)."""

    def key(row: Dict[str, Any]):
        score = row.get("score")
        if score is None or (isinstance(score, float) and math.isnan(score)):
            score = math.inf
        elif greater_is_better(row["metric"]):
            score = -score
        return (row["status"] != "completed", str(row["task"]), score, row["job"])

    return sorted(rows, key=key)


def glue_submission(sweep_dir: Path, rows: List[Dict[str, Any]]) -> str:
    """``glue_submission.zip`` from the best job of each task, and the GLUE score; what is missing is listed."""
    best: Dict[str, Dict[str, Any]] = {}
    for row in rows:  # ranked: the first completed job of a task is its best
        if row["status"] == "completed" and row["task"] not in best:
            best[row["task"]] = row
    files = {
        path.name: path
        for row in best.values()
        for path in row["predictions"].values()
        if path.name in GLUE_FILES and path.is_file()
    }
    with (
        replaced_atomically(sweep_dir / "glue_submission.zip") as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for name in GLUE_FILES:
            if name in files:
                archive.write(files[name], arcname=name)
    scores = {task: row["task_score"] for task, row in best.items()}
    missing = [name for name in GLUE_FILES if name not in files]
    lines = [
        "",
        "## GLUE",
        "",
        f"GLUE score (validation, mean over {len(scores)} tasks; a task with several metrics counts their mean): "
        f"**{100 * sum(scores.values()) / max(len(scores), 1):.1f}**",
        "",
    ]
    lines += [f"- {task}: {100 * score:.1f}" for task, score in sorted(scores.items())]
    lines += ["", f"`glue_submission.zip` holds {', '.join(n for n in GLUE_FILES if n in files) or 'no file'}."]
    if missing:
        lines.append(
            f"Not in it (the task did not run, failed, or its test split was not given): {', '.join(missing)}."
        )
    return "\n".join(lines) + "\n"


def write_leaderboard(sweep_dir: Path, glue: bool = False) -> List[Dict[str, Any]]:
    """Write ``summary.csv`` and ``summary.md`` (with ``glue``, the GLUE score and submission too) in ``sweep_dir``."""
    jobs = [p for p in sweep_dir.iterdir() if SavedRun(p).overrides_path.is_file()]
    rows = rank([job_row(p) for p in jobs])
    columns = columns_of(rows)
    with replaced_atomically(sweep_dir / SWEEP_SUMMARY) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    # The markdown shows only the overrides that differ between jobs: what the sweep compared.
    shared = set.intersection(*(set(r["overrides"].split()) for r in rows)) if rows else set()
    shown = [{**r, "overrides": " ".join(o for o in r["overrides"].split() if o not in shared)} for r in rows]
    text = f"# Sweep {sweep_dir}\n\n{table_text(shown, columns)}\n"
    best = sweep_dir / "optimization_results.yaml"  # written by the Optuna sweeper
    if best.is_file():
        result = OmegaConf.load(best)
        params = " ".join(f"{k}={v}" for k, v in result.best_params.items())
        text += f"\nBest parameters (Optuna): `{params}` with validation score {result.best_value:.4f}\n"
    if glue:
        text += glue_submission(sweep_dir, rows)
    write_text(sweep_dir / "summary.md", text)
    return rows


class Leaderboard(Callback):
    def __init__(self, glue: bool = False) -> None:
        self.glue = glue  # experiment=glue: add the GLUE score and glue_submission.zip

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = write_leaderboard(sweep_dir, self.glue)
        audit = write_label_audit(sweep_dir, rows)  # None unless every fold of a k-fold sweep finished
        if audit:
            write_text(
                sweep_dir / "summary.md", (sweep_dir / "summary.md").read_text(encoding="utf-8") + f"\n{audit}\n"
            )
        failed = sum(r["status"] != "completed" for r in rows)
        log.info(
            "Leaderboard (%d jobs, %d failed), also in %s and %s:\n%s",
            len(rows),
            failed,
            sweep_dir / "summary.md",
            SWEEP_SUMMARY,
            (sweep_dir / "summary.md").read_text(),
        )
        by_configuration = write_by_configuration(
            sweep_dir, rows
        )  # None unless a configuration ran with several seeds or folds
        if by_configuration:
            log.info(
                "By configuration, also in %s, summary_by_config.csv and summary.png:\n%s",
                sweep_dir / "summary_by_config.md",
                by_configuration,
            )
