"""``resume=true`` / ``resume=<run folder>``: continue a run from its latest complete checkpoint.

A resumed run always trains with the config its folder was started with (``.hydra/config.yaml``),
so a checkpoint is never continued under other settings. Hydra writes no new ``.hydra/`` into
a resumed folder (``hydra.output_subdir`` is null then): the original record stays.
"""

import logging
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from finetune.config import FinetuneError, with_schemas
from finetune.folders import LOCK_FILE

log = logging.getLogger(__name__)
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
SAVED_CONFIG = Path(".hydra") / "config.yaml"
_missing_run_dirs = set()


def resume_run_dir(resume: Any, new_run_dir: str) -> str:
    """Resolver for ``hydra.run.dir``: the folder named by ``resume=<folder>``, else a new one."""
    if not isinstance(resume, str):
        return new_run_dir
    if not Path(resume).expanduser().is_dir():  # Hydra is about to create it: remember it was not there
        _missing_run_dirs.add(Path(resume).expanduser().resolve())
    return resume


def hydra_output_subdir(resume: Any) -> Optional[str]:
    """Resolver for ``hydra.output_subdir``: keep the resumed folder's own record of its config.

    Only rank 0 of a torchrun launch writes the record: the ranks share one folder.
    """
    from finetune.distributed import rank

    return None if resume or rank() != 0 else ".hydra"


def resumed_config(cfg: DictConfig, run_dir: Path, overrides: Sequence[str]) -> DictConfig:
    """The config ``run_dir`` was started with, after checking that resuming it makes sense."""
    how = f"resume={cfg.resume}" if isinstance(cfg.resume, str) else "resume=true"
    if {p.name for p in run_dir.iterdir()} <= {"run.log", LOCK_FILE}:  # Hydra has just created it: remove it again
        shutil.rmtree(run_dir)
        problem = "no such run folder" if run_dir.resolve() in _missing_run_dirs else "no run was started there"
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


def latest_checkpoint(run_dir: Path, remove_incomplete: bool = True) -> str:
    """The newest checkpoint that was completely written (the Trainer writes trainer_state.json last)."""
    folder = run_dir / "checkpoints"
    found = sorted(
        (int(m.group(1)), p) for p in (folder.iterdir() if folder.is_dir() else []) if (m := CHECKPOINT.match(p.name)) and p.is_dir()
    )
    complete = [p for _, p in found if (p / "trainer_state.json").is_file()]
    if not complete:
        raise FinetuneError(f"Nothing to resume in {run_dir}: it has no complete checkpoint in checkpoints/. Start it anew without resume=.")
    latest = complete[-1]
    for step, partial in found:
        if step > int(CHECKPOINT.match(latest.name).group(1)) and remove_incomplete:
            log.warning("Removing %s: the run was stopped while writing it.", partial)
            shutil.rmtree(partial)
    return str(latest)
