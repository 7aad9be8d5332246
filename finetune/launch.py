"""How one Hydra job runs: errors in single runs and sweeps, and memory between sweep jobs."""

import gc
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from finetune.config import GROUP_SCHEMAS, FinetuneError, with_schemas
from finetune.ranges import RULES

log = logging.getLogger("finetune")
FAILED_FILE = "failed.json"


def run_job(cfg: DictConfig) -> Optional[float]:
    """Run one job; return the task's validation metric (a sweeper's objective).

    A single run that fails on bad input prints one message and exits 1. In a sweep, a
    failed job is recorded in its folder (``failed.json``, read by the leaderboard) and the
    sweep goes on with the next job. SIGINT / SIGTERM stop either after a checkpoint is saved
    (exit 130 / 143).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from finetune.distributed import quiet_replica_logging
    from finetune.files import write_json
    from finetune.resume import resumed_config
    from finetune.train import run
    from finetune.trainer import StoppedBySignal

    quiet_replica_logging()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        cfg = with_schemas(cfg)  # typed, also when the config is a run's saved one (--config-path <run>/.hydra)
        if cfg.resume:
            cfg = resumed_config(cfg, run_dir, hydra_cfg.overrides.task)
        metrics = run(cfg, run_dir)
        return metrics["validation"].get(cfg.task.metric_for_best_model)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training: stop now
        log.error("Interrupted: the run in %s did not finish.", run_dir)
        sys.exit(130)
    except Exception as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if isinstance(error, StoppedBySignal):  # asked to stop: a sweep stops too
            log.error("%s", error)
            sys.exit(error.exit_code)
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


def refuse_wrong_types(overrides: List[str]) -> None:
    """A command-line value of the wrong type for a typed group stops the run with one line.

    Hydra finds the same mistake when it composes the config, but reports it in six lines. The
    check is the group's own schema, applied to each value the override gives (each of a sweep's).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf.errors import OmegaConfBaseException

    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # Hydra's own report, traceback included
        return
    parser = OverridesParser.create()
    for line in overrides:
        if line.startswith("-") or "=" not in line or line.lstrip("+~").split(".")[0] not in GROUP_SCHEMAS:
            continue
        try:
            override = parser.parse_overrides([line])[0]
        except Exception:  # not override syntax: Hydra says so itself
            continue
        key = override.key_or_group
        if "." not in key or override.is_delete():
            continue
        try:
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except Exception:  # an interval or a glob: no values to list
            continue
        for value in values:
            typed = with_schemas(OmegaConf.create({group: {} for group in GROUP_SCHEMAS}))
            try:
                OmegaConf.update(typed, key, value, merge=True)
            except OmegaConfBaseException as error:
                example = f", e.g. {key}={RULES[key].example}" if key in RULES else ""
                raise SystemExit(f"{key}={value!r}: {str(error).splitlines()[0]}{example}.") from None


def release_memory() -> None:
    """Free what the finished job held (model, optimizer, CUDA cache) before the next one starts."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class CheckRunFolder(Callback):
    """Before Hydra creates the run folder: one that cannot be created stops the run with one line.

    (Hydra itself would print a traceback.) SystemExit passes through Hydra's error handling.
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        check_can_create(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        check_can_create(config, "hydra.sweep.dir")


def check_can_create(config: DictConfig, key: str) -> None:
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(config)  # the folder's name may interpolate ${hydra:...}
    folder = Path(OmegaConf.select(config, key)).expanduser().absolute()
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        problem = "is not a folder" if not existing.is_dir() else "is not writable"
        raise SystemExit(f"Cannot create the run folder {folder}: {existing} {problem}. Choose another with {key}=<folder>.")
