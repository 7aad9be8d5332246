"""How one Hydra job runs: errors in single runs and sweeps, and memory between sweep jobs."""

import gc
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from finetune.config import FinetuneError

log = logging.getLogger("finetune")
FAILED_FILE = "failed.json"


def run_job(cfg: DictConfig) -> Optional[float]:
    """Run one job; return the task's validation metric (a sweeper's objective).

    A single run that fails on bad input prints one message and exits 1. In a sweep, a
    failed job is recorded in its folder (``failed.json``, read by the leaderboard) and the
    sweep goes on with the next job.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from finetune.distributed import quiet_replica_logging
    from finetune.train import run, write_json

    quiet_replica_logging()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        metrics = run(cfg, run_dir)
        return metrics["validation"].get(cfg.task.metric_for_best_model)
    except Exception as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if hydra_cfg.mode != RunMode.MULTIRUN:
            if isinstance(error, FinetuneError):
                log.error("%s", error)
                sys.exit(1)
            raise
        if isinstance(error, FinetuneError):
            log.error("Job %s failed: %s", hydra_cfg.job.num, error)
        else:
            log.error("Job %s failed:\n%s", hydra_cfg.job.num, traceback.format_exc())
        write_json(run_dir / FAILED_FILE, {"error": f"{type(error).__name__}: {error}"})
        return float("nan")  # Optuna records a NaN objective as a failed trial
    finally:
        release_memory()


def release_memory() -> None:
    """Free what the finished job held (model, optimizer, CUDA cache) before the next one starts."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
