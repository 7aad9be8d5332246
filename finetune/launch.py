"""How one Hydra job runs: errors in single runs and sweeps, and memory between sweep jobs."""

import gc
import logging
import os
import re
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from finetune.config.ranges import RULES
from finetune.config.schemas import GROUP_SCHEMAS, with_schemas
from finetune.errors import FinetuneError, StoppedBySignal, one_line, settings_named_in, stage_of
from finetune.runs.saved import SavedRun

log = logging.getLogger("finetune")


def register_resolvers() -> None:
    """Every resolver conf/config.yaml uses: the config's own, and where Hydra writes its record of a run."""
    from finetune.config import resolvers
    from finetune.runs.saved import hydra_output_subdir

    resolvers.register_resolvers()
    if not OmegaConf.has_resolver("hydra_output_subdir"):
        OmegaConf.register_new_resolver("hydra_output_subdir", hydra_output_subdir)


def run_job(cfg: DictConfig) -> Optional[float]:
    """Run one job; return the task's validation metric (a sweeper's objective).

    A single run that fails on bad input prints one message and exits 1. In a sweep, a
    failed job is recorded in its folder (``failed.json``, read by the leaderboard) and the
    sweep goes on with the next job. SIGINT / SIGTERM stop either after a checkpoint is saved
    (exit 130 / 143).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from finetune.distributed import quiet_replica_logging, rank
    from finetune.runs import folders
    from finetune.runs.resume import resumed_config
    from finetune.training.train import run

    quiet_replica_logging()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        if rank() == 0 and not folders.holds(run_dir):  # composed without CheckRunFolder (--config-path <run>/.hydra)
            folders.claim_made(run_dir, resuming=bool(cfg.get("resume")))
        cfg = with_schemas(cfg)  # typed, also when the config is a run's saved one (--config-path <run>/.hydra)
        if cfg.resume:
            cfg = resumed_config(cfg, run_dir, hydra_cfg.overrides.task)
        metrics = run(cfg, run_dir)
        scored = metrics["validation"] or metrics.get("test") or {}  # few labels and a test file: no validation
        return scored.get(metrics["train"]["metric_for_best_model"])
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training: stop now
        log.error("Interrupted: the run in %s did not finish.", run_dir)
        sys.exit(130)
    except Exception as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = setup_failure(error, cfg)
        if message is not None:  # a library refused a setting: one line, like the run's own checks
            error = FinetuneError(message)
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
        if folders.holds(run_dir):  # never into a folder that another job has
            SavedRun(run_dir).write_failure({"error": f"{type(error).__name__}: {error}"})
        return float("nan")  # Optuna records a NaN objective as a failed trial
    finally:
        release_memory()


FULL_ERROR_HINT = "(HYDRA_FULL_ERROR=1 shows the traceback)"


def setup_failure(error: Exception, cfg: DictConfig) -> Optional[str]:
    """One line for an error a library raised while the run was being set up; None for any other error.

    The run marks its setup stages itself (``finetune.errors.setup_stage``): the stage says what was
    being done and which config groups' keys the message may name. An error outside every stage
    (training itself, the evaluation and files after it) keeps its traceback: it is no setting to
    change but a fault to see.
    """
    stage = stage_of(error)
    if stage is None:
        return None
    what, groups, default_keys = stage
    keys = [
        key
        for group in groups
        if isinstance(cfg.get(group), DictConfig)
        for key in settings_named_in(str(error), cfg[group], group)
    ]
    return (
        f"{what} failed; check {', '.join(keys) or default_keys}: "
        f"{type(error).__name__}: {one_line(str(error))} {FULL_ERROR_HINT}"
    )


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
    """Claims the run's (or the sweep's) folder before Hydra creates it and writes into it.

    A folder that cannot be created stops the run with one line (Hydra itself would print a
    traceback); so does one that holds another run. SystemExit passes through Hydra's error
    handling. See finetune/runs/folders.py for the rules.
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        with failing_closed("hydra.run.dir"):
            check_can_create(config, "hydra.run.dir")
            claim_run_folder(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        with failing_closed("hydra.sweep.dir"):
            check_can_create(config, "hydra.sweep.dir")
            claim_sweep_folder(config)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from finetune.distributed import rank
        from finetune.runs import folders

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN and rank() == 0:
            folders.claim_job(Path(hydra_cfg.runtime.output_dir))
        for note in folders.notes:  # now in the run's log too
            log.warning("%s", note)
        folders.notes.clear()

    def on_job_end(self, config: DictConfig, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from finetune.runs import folders

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:  # a launcher's worker process may run the next job
            folders.release(Path(hydra_cfg.runtime.output_dir))


@contextmanager
def failing_closed(key: str) -> Iterator[None]:
    """Stop the run when claiming its folder fails: Hydra turns a callback's exception into a
    warning and goes on, which would let the run write into a folder it has not claimed."""
    try:
        yield
    except Exception as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(
            f"Could not claim the folder {key} names: {type(error).__name__}: {one_line(str(error))} {FULL_ERROR_HINT}"
        ) from error


def check_can_create(config: DictConfig, key: str) -> None:
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(config)  # the folder's name may interpolate ${hydra:...}
    folder = Path(OmegaConf.select(config, key)).expanduser().absolute()
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        problem = "is not a folder" if not existing.is_dir() else "is not writable"
        raise SystemExit(
            f"Cannot create the run folder {folder}: {existing} {problem}. Choose another with {key}=<folder>."
        )


def named_on_command_line(config: DictConfig, key: str) -> bool:
    """Whether the user chose ``key`` (``hydra.run.dir=...``) rather than leaving the computed name."""
    return any(o.split("=", 1)[0].lstrip("+~") == key for o in config.hydra.overrides.hydra)


def claim_run_folder(config: DictConfig) -> None:
    """Claim the run folder on rank 0, and point every rank's ``hydra.run.dir`` at it.

    A resumed run locks the folder it continues; a new run creates its own (finetune/runs/folders.py).
    """
    from finetune.distributed import from_rank_zero
    from finetune.runs import folders

    wanted = Path(str(OmegaConf.select(config, "hydra.run.dir"))).expanduser()
    resume = OmegaConf.select(config, "resume", default=None)

    def claim() -> str:
        if resume:
            folders.claim_for_resume(wanted, f"resume={resume}" if isinstance(resume, str) else "resume=true")
            return str(wanted)
        return str(folders.claim(wanted, named_on_command_line(config, "hydra.run.dir"), "hydra.run.dir"))

    folder = from_rank_zero("run_dir", claim)
    with read_write(config.hydra.run):
        config.hydra.run.dir = folder


def claim_sweep_folder(config: DictConfig) -> None:
    """Claim the sweep folder; every job's config is composed again, so the override carries the name to it."""
    from finetune.runs import folders

    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False)["subdir"]
    if not re.search(r"job\.(num|id)\b", str(subdir)):
        raise SystemExit(
            f"hydra.sweep.subdir={subdir} would give two jobs the same folder; include ${{hydra:job.num}}, e.g. "
            "hydra.sweep.subdir='${hydra:job.num}_${hydra:job.override_dirname}'."
        )
    wanted = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).expanduser()
    folder = folders.claim(wanted, named_on_command_line(config, "hydra.sweep.dir"), "hydra.sweep.dir", sweep=True)
    for note in folders.notes:
        log.warning("%s", note)
    folders.notes.clear()
    overrides = [o for o in config.hydra.overrides.hydra if o.split("=", 1)[0].lstrip("+~") != "hydra.sweep.dir"]
    with read_write(config.hydra):
        config.hydra.sweep.dir = str(folder)
        config.hydra.overrides.hydra = [*overrides, f"hydra.sweep.dir={quoted(str(folder))}"]


def quoted(value: str) -> str:
    """A value for a Hydra override, quoted so that commas, spaces and brackets stay text."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
