"""A Hydra callback that writes a sweep's leaderboard when the sweep ends.

It reads what each job left in its folder (``metrics.json``, or ``failed.json``), so it
works the same whether the jobs ran in this process, in local processes or on SLURM.
"""

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from finetune.files import replaced_atomically, write_text
from finetune.launch import FAILED_FILE

log = logging.getLogger("finetune")
COLUMNS = [
    "job", "overrides", "task", "metric", "val_accuracy", "val_f1", "val_loss",
    "test_accuracy", "test_f1", "train_time_s", "status", "error", "run_folder",
]


def job_row(job_dir: Path) -> Dict[str, Any]:
    """One leaderboard row from a job folder."""
    config = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    hydra = OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra
    row: Dict[str, Any] = {
        "job": hydra.job.num,
        "overrides": " ".join(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")),
        "task": hydra.runtime.choices.get("task"),
        "metric": config.task.metric_for_best_model,
        "run_folder": str(job_dir),
        "status": "failed",
        "error": "",
    }
    if (job_dir / "metrics.json").is_file():
        metrics = json.loads((job_dir / "metrics.json").read_text())
        validation, test = metrics["validation"], metrics.get("test") or {}
        row.update(
            status="completed",
            val_accuracy=validation.get("accuracy"), val_f1=validation.get("f1"), val_loss=validation.get("loss"),
            test_accuracy=test.get("accuracy"), test_f1=test.get("f1"), train_time_s=metrics["train"]["runtime_s"],
        )
    elif (job_dir / FAILED_FILE).is_file():
        row["error"] = json.loads((job_dir / FAILED_FILE).read_text())["error"].splitlines()[0]
    else:
        row["error"] = "no metrics: the job was killed or is still running"
    return row


def rank(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Completed jobs first, grouped by task, best validation score first (lowest for loss)."""

    def key(row: Dict[str, Any]):
        score = row.get(f"val_{row['metric']}")
        if score is None or (isinstance(score, float) and math.isnan(score)):
            score = math.inf
        elif row["metric"] != "loss":
            score = -score
        return (row["status"] != "completed", str(row["task"]), score, row["job"])

    return sorted(rows, key=key)


def markdown_table(rows: List[Dict[str, Any]], columns: List[str]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.4f}" if isinstance(value, float) else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_leaderboard(sweep_dir: Path) -> List[Dict[str, Any]]:
    """Write ``summary.csv`` and ``summary.md`` into ``sweep_dir``; return the ranked rows."""
    jobs = [p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()]
    rows = rank([job_row(p) for p in jobs])
    with replaced_atomically(sweep_dir / "summary.csv") as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    # The markdown shows only the overrides that differ between jobs: what the sweep compared.
    shared = set.intersection(*(set(r["overrides"].split()) for r in rows)) if rows else set()
    shown = [{**r, "overrides": " ".join(o for o in r["overrides"].split() if o not in shared)} for r in rows]
    text = f"# Sweep {sweep_dir}\n\n{markdown_table(shown, COLUMNS)}\n"
    best = sweep_dir / "optimization_results.yaml"  # written by the Optuna sweeper
    if best.is_file():
        result = OmegaConf.load(best)
        params = " ".join(f"{k}={v}" for k, v in result.best_params.items())
        text += f"\nBest parameters (Optuna): `{params}` with validation score {result.best_value:.4f}\n"
    write_text(sweep_dir / "summary.md", text)
    return rows


class Leaderboard(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = write_leaderboard(sweep_dir)
        failed = sum(r["status"] != "completed" for r in rows)
        log.info(
            "Leaderboard (%d jobs, %d failed), also in %s and summary.csv:\n%s",
            len(rows), failed, sweep_dir / "summary.md", (sweep_dir / "summary.md").read_text(),
        )
