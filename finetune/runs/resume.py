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

from finetune.config.resolvers import missing_run_dirs
from finetune.config.schemas import with_schemas
from finetune.errors import FinetuneError
from finetune.runs.folders import LOCK_FILE, latest_checkpoint

log = logging.getLogger(__name__)
SAVED_CONFIG = Path(".hydra") / "config.yaml"


def resumed_config(cfg: DictConfig, run_dir: Path, overrides: Sequence[str]) -> DictConfig:
    """The config ``run_dir`` was started with, after checking that resuming it makes sense."""
    how = f"resume={cfg.resume}" if isinstance(cfg.resume, str) else "resume=true"
    if {p.name for p in run_dir.iterdir()} <= {"run.log", LOCK_FILE}:  # Hydra has just created it: remove it again
        shutil.rmtree(run_dir)
        problem = "no such run folder" if run_dir.resolve() in missing_run_dirs else "no run was started there"
        raise FinetuneError(
            f"Nothing to resume in {run_dir}: {problem}. Give the run's folder: "
            "resume=<run folder>, or resume=true with the run's own hydra.run.dir."
        )
    if (run_dir / "metrics.json").is_file():
        raise FinetuneError(f"{how}: the run in {run_dir} has finished (it has metrics.json); nothing to resume.")
    latest_checkpoint(run_dir, remove_incomplete=False)  # none: say so before anything else
    saved_file = run_dir / SAVED_CONFIG
    if not saved_file.is_file():
        raise FinetuneError(f"{how}: {run_dir} has no {SAVED_CONFIG}, so it is not a run folder that can be resumed.")
    saved = OmegaConf.load(saved_file)
    for key in set(cfg) - set(saved):  # a group newer than the run (peft, callbacks): its default is what the run did
        saved[key] = cfg[key]
    if isinstance(cfg.resume, str):
        extra = [o for o in overrides if not o.startswith("resume=")]
        if extra:
            raise FinetuneError(
                f"resume=<run folder> continues the run with the config saved in {saved_file}; drop {' '.join(extra)} "
                "(to change settings, start a new run)."
            )
    else:
        changed = _differences(_plain(saved), _plain(cfg))
        if changed:
            raise FinetuneError(
                f"resume=true continues the run in {run_dir} with the config it was started with, but this command "
                f"changes {'; '.join(changed[:4])}{f' and {len(changed) - 4} more' if len(changed) > 4 else ''}. Repeat the run's own command line with resume=true, or use resume={run_dir}."
            )
    saved = with_schemas(saved)
    OmegaConf.set_struct(saved, False)
    saved.resume = cfg.resume
    return saved


def _plain(cfg: DictConfig) -> Dict[str, Any]:
    values = OmegaConf.to_container(cfg, resolve=True)
    values.pop("resume", None)
    return values


def _differences(saved: Any, now: Any, prefix: str = "") -> List[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        keys = sorted(set(saved) | set(now), key=str)
        return [d for k in keys for d in _differences(saved.get(k), now.get(k), f"{prefix}{k}.")]
    return [] if saved == now else [f"{prefix[:-1]}: {saved!r} -> {now!r}"]
