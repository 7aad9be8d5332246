"""``resume=true`` / ``resume=<run folder>``: continue a run from its latest complete checkpoint.

A resumed run always trains with the config its folder was started with (``.hydra/config.yaml``),
so a checkpoint is never continued under other settings. Hydra writes no new ``.hydra/`` into
a resumed folder (``hydra.output_subdir`` is null then): the original record stays.
"""

import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Sequence

from omegaconf import DictConfig, OmegaConf

from finetune.config.checks import RUN_CALLBACK_TARGETS
from finetune.config.resolvers import missing_run_dirs
from finetune.config.schemas import current_target, with_schemas
from finetune.errors import FinetuneError
from finetune.runs.folders import latest_checkpoint
from finetune.runs.saved import LOCK_FILE, METRICS_FILE, RUN_LOG, SavedRun

log = logging.getLogger(__name__)


def resumed_config(cfg: DictConfig, run_dir: Path, overrides: Sequence[str]) -> DictConfig:
    """The config ``run_dir`` was started with, after checking that resuming it makes sense.

    The saved config is read as the code now names things (moved classes, renamed keys) and typed as
    Hydra composes it, so that ``resume=true`` with the run's own command line finds no difference
    in a folder written by older code.
    """
    how = f"resume={cfg.resume}" if isinstance(cfg.resume, str) else "resume=true"
    run = SavedRun(run_dir)
    if {p.name for p in run_dir.iterdir()} <= {RUN_LOG, LOCK_FILE}:  # Hydra has just created it: remove it again
        shutil.rmtree(run_dir)
        problem = "no such run folder" if run_dir.resolve() in missing_run_dirs else "no run was started there"
        raise FinetuneError(
            f"Nothing to resume in {run_dir}: {problem}. Give the run's folder: "
            "resume=<run folder>, or resume=true with the run's own hydra.run.dir."
        )
    if run.is_finished:
        raise FinetuneError(f"{how}: the run in {run_dir} has finished (it has {METRICS_FILE}); nothing to resume.")
    latest_checkpoint(run_dir, remove_incomplete=False)  # none: say so before anything else
    if not run.has_config:
        raise FinetuneError(
            f"{how}: {run_dir} has no {run.config_path.relative_to(run_dir)}, so it is not a run folder that can be "
            "resumed."
        )
    saved = run.config(typed=False)
    for key in set(cfg) - set(saved):  # a group newer than the run (peft, callbacks): its default is what the run did
        saved[key] = cfg[key]
    saved = with_schemas(saved)  # a setting newer than the run: likewise
    if isinstance(cfg.resume, str):
        extra = [o for o in overrides if not o.startswith("resume=")]
        if extra:
            raise FinetuneError(
                f"resume=<run folder> continues the run with the config saved in {run.config_path}; "
                f"drop {' '.join(extra)} (to change settings, start a new run)."
            )
    else:
        changed = _differences(_plain(saved), _plain(cfg))
        if changed:
            more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
            raise FinetuneError(
                f"resume=true continues the run in {run_dir} with the config it was started with, but this command "
                f"changes {'; '.join(changed[:4])}{more}. Repeat the run's own command line with resume=true, "
                f"or use resume={run_dir}."
            )
    OmegaConf.set_struct(saved, False)
    saved.resume = cfg.resume
    return saved


def _plain(cfg: DictConfig) -> Dict[str, Any]:
    values = OmegaConf.to_container(cfg, resolve=True)
    values.pop("resume", None)
    if isinstance(values.get("callbacks"), dict):  # one every run has (StopOnSignal) is no setting, listed or not
        values["callbacks"] = {
            name: node
            for name, node in values["callbacks"].items()
            if not (isinstance(node, dict) and current_target(str(node.get("_target_"))) in RUN_CALLBACK_TARGETS)
        }
    return values


# Defaults that became "decided by the run" (sized to the data, calibrated where validation holds enough rows):
# a run saved with the value it was then given is resumed with it, not refused as a changed config.
DECIDED_BY_THE_RUN = {
    "trainer.learning_rate": None,
    "trainer.num_train_epochs": None,
    "trainer.per_device_train_batch_size": None,
    "trainer.eval_strategy": None,
    "trainer.save_strategy": None,
    "trainer.load_best_model_at_end": None,
    "task.validation_size": None,
    "task.calibration": "auto",
}


def _differences(saved: Any, now: Any, prefix: str = "") -> List[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        keys = sorted(set(saved) | set(now), key=str)
        return [d for k in keys for d in _differences(saved.get(k), now.get(k), f"{prefix}{k}.")]
    key = prefix[:-1]
    if saved == now or (key in DECIDED_BY_THE_RUN and now == DECIDED_BY_THE_RUN[key]):
        return []
    return [f"{key}: {saved!r} -> {now!r}"]
