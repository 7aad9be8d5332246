"""Run and sweep folders: each one claimed by one run, and a run's results never written over.

A new run claims its folder by creating it. ``os.mkdir`` fails when the folder exists, so of
runs that computed the same name (started in the same second) exactly one gets it; the others
take the next free name, ``<name>-2``, ``<name>-3``, ... and say so. A folder the user named
(``hydra.run.dir=``, ``hydra.sweep.dir=``) may exist, empty; one that holds a run is refused.

While a run works it holds an ``flock`` on ``.lock`` in its folder. The kernel drops the lock
when the process ends, however it ends (SIGKILL included), so a killed run can be resumed
at once, and a running one is never resumed, or written into, by a second process.
"""

import fcntl
import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from finetune.errors import FinetuneError
from finetune.runs.saved import (
    CHECKPOINT_STATE,
    CHECKPOINTS_DIR,
    HYDRA_DIR,
    JOB_RESULTS,
    LOCK_FILE,
    METRICS_FILE,
    RUN_FILES,
    RUN_LOG,
    SWEEP_FILES,
    SWEEP_SUMMARY,
)

log = logging.getLogger("finetune")
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
MAX_TRIES = 1000  # names tried before giving up: <name>, <name>-2, ... <name>-1000

_held: Dict[Path, int] = {}  # folder -> open descriptor of its lock file, held until release() or exit
notes: List[str] = []  # what the claim had to do (a name that was taken), logged once the run's log is set up


def _forget_locks_in_child() -> None:
    """A forked child (data loader, tokenization worker) closes its copies of the lock descriptors.

    An flock belongs to the open file, which a fork shares: a worker that outlived a killed
    run would otherwise keep its folder locked. Closing a copy leaves the parent's lock held.
    """
    for fd in _held.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def lock(folder: Path) -> Optional[str]:
    """Take ``folder``'s lock for this process; None once held, else who holds it (``pid N on host``)."""
    key = folder.resolve()
    if key in _held:
        return None
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd programs
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        return holder
    _held[key] = fd
    return None


def _sign(folder: Path) -> None:
    """Write who holds the lock into the lock file, for the message another process shows."""
    fd = _held[folder.resolve()]
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)


def holder(folder: Path) -> Optional[str]:
    """Who holds ``folder``'s lock (another process), or None when nobody does; takes nothing."""
    if folder.resolve() in _held or not (folder / LOCK_FILE).is_file():
        return None
    fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
    finally:
        os.close(fd)  # also drops the shared lock, if it was taken
    return None


def release(folder: Path) -> None:
    fd = _held.pop(folder.resolve(), None)
    if fd is not None:
        os.close(fd)


def holds(folder: Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return folder.resolve() in _held


def _present(folder: Path, names: Tuple[str, ...]) -> List[str]:
    return [name for name in names if (folder / name).exists()]


def run_refusal(folder: Path, key: str, running: Optional[str] = None) -> Optional[str]:
    """Why a new run may not write into ``folder`` (one line with the choices), or None if it may."""
    other = f"choose another folder with {key}=<folder>"
    if running:
        return (
            f"{folder} holds a running run ({running} holds its {LOCK_FILE}): "
            f"a new run never writes into it; wait for that run, or {other}."
        )
    if (folder / METRICS_FILE).is_file():
        return f"{folder} holds a finished run (it has {METRICS_FILE}): a new run never writes into it; {other}."
    found = _present(folder, RUN_FILES)
    if not found:
        return None
    try:
        latest_checkpoint(folder, remove_incomplete=False)
    except FinetuneError:
        why = f"; its {RUN_LOG} says why" if (folder / RUN_LOG).is_file() else ""
        return (
            f"{folder} holds a run that stopped before its first checkpoint (it has {', '.join(found)}{why}): "
            f"{other}, or delete that folder."
        )
    return f"{folder} holds a run that did not finish: continue it with resume={folder}, or {other}."


def clear_unstarted(folder: Path) -> List[str]:
    """Remove what a run left that stopped before any work, and return its names; leave any other folder as it is.

    Such a run (a config refused, a data file that could not be read, Ctrl-C while loading) left only Hydra's
    record of its config and its log: nothing to resume or keep, so its folder is free for the corrected command.
    """
    left = _present(folder, (HYDRA_DIR, RUN_LOG))
    if not left or _present(folder, JOB_RESULTS):
        return []
    for name in left:
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return left


def sweep_refusal(folder: Path, key: str, running: Optional[str] = None) -> Optional[str]:
    """Why a new sweep may not write into ``folder``, or None if it may."""
    other = f"choose another folder with {key}=<folder>"
    if running:
        return (
            f"{folder} holds a running sweep ({running} holds its {LOCK_FILE}): "
            f"a new sweep never writes into it; wait for it, or {other}."
        )
    found = _present(folder, SWEEP_FILES) + sorted(p.name for p in folder.iterdir() if (p / HYDRA_DIR).is_dir())[:3]
    if not found:
        return None
    state = (
        f"a finished sweep (it has {SWEEP_SUMMARY})"
        if (folder / SWEEP_SUMMARY).is_file()
        else f"a sweep that did not finish (it has {', '.join(found)})"
    )
    return f"{folder} holds {state}: a new sweep never writes into it; {other}."


def claim(wanted: Path, named: bool, key: str, sweep: bool = False) -> Path:
    """Create and lock a new folder for a run (or a sweep) and return it.

    ``named``: the user chose the folder, so it may exist if it holds no run, and one that does
    is refused (SystemExit, one line). Otherwise the name was computed (time, model, task): a
    name already taken is never reused, and the next free ``<name>-N`` is claimed instead.
    """
    refusal, what = (sweep_refusal, "sweep") if sweep else (run_refusal, "run")
    wanted.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, MAX_TRIES + 1):
        folder = wanted if n == 1 else wanted.with_name(f"{wanted.name}-{n}")
        try:
            os.mkdir(folder)  # exclusive: of two runs creating the same folder, one gets FileExistsError
        except FileExistsError:
            if not named:
                continue
            if not folder.is_dir():
                raise SystemExit(
                    f"Cannot use {folder} as the {what} folder: it is a file. Choose another with {key}=<folder>."
                ) from None
            # finished: refused without touching a file
            if (folder / (SWEEP_SUMMARY if sweep else METRICS_FILE)).is_file():
                raise SystemExit(refusal(folder, key)) from None  # the refusal says it all
        try:
            running = lock(folder)
        except OSError as error:
            raise SystemExit(
                f"Cannot use {folder} as the {what} folder: {error.strerror}. Choose another with {key}=<folder>."
            ) from None
        if running is None and not sweep:
            replaced = clear_unstarted(folder)
            if replaced:
                notes.append(
                    f"{folder} held a run that stopped before any work (it had only {', '.join(replaced)}): "
                    "this run replaces it."
                )
        problem = refusal(folder, key, running)
        if problem is None:
            _sign(folder)
            if n > 1:
                notes.append(
                    f"{wanted} was taken (another run started in the same second, or before): "
                    f"this {what} writes into {folder}."
                )
            return folder
        if running is None:
            release(folder)
        if named:
            raise SystemExit(problem)
    raise SystemExit(f"{wanted}: {MAX_TRIES} names tried, all taken. Choose another folder with {key}=<folder>.")


def claim_for_resume(folder: Path, how: str) -> None:
    """Lock a folder a run resumes in: refused while another process still runs there, or once it has finished.

    A folder that is not there is left alone: resuming then says there is nothing to resume.
    """
    if not folder.is_dir():
        return
    if (folder / METRICS_FILE).is_file():  # refused before Hydra's log opens the folder's log
        raise SystemExit(f"{how}: the run in {folder} has finished (it has {METRICS_FILE}); nothing to resume.")
    running = lock(folder)
    if running:
        raise SystemExit(
            f"{how}: the run in {folder} is still running ({running} holds its {LOCK_FILE}); a run is resumed once its "
            "process has ended. Wait for it, or stop it (Ctrl-C or kill: it saves a checkpoint first)."
        )
    _sign(folder)


def claim_job(folder: Path) -> None:
    """Lock a sweep job's folder (Hydra has just made it); refuse one another job has used.

    A sweep folder is claimed whole, and each job's subfolder carries its job number, so this
    only fails when a sweep's settings give two jobs the same folder.
    """
    running = lock(folder)
    used = _present(folder, JOB_RESULTS)
    if not (running or used):
        _sign(folder)
    else:
        if running is None:
            release(folder)
        who = f"{running} is running a job there" if running else f"it holds another job's {', '.join(used)}"
        raise SystemExit(
            f"The job folder {folder} is taken: {who}. "
            "Give each job its own folder: hydra.sweep.subdir must contain ${hydra:job.num}."
        )


def claim_made(folder: Path, resuming: bool) -> None:
    """Lock a run folder Hydra has already made and written its config into.

    That happens only when the config was composed without this project's Hydra settings (its
    callbacks), e.g. from a run's own ``--config-path <run>/.hydra``; the same rules then stop
    the run before it writes any result over another run's.
    """
    running = lock(folder)
    used = [] if resuming else _present(folder, JOB_RESULTS)
    if running or used:
        if running is None:
            release(folder)

        who = f"a run is running there ({running})" if running else f"it holds another run's {', '.join(used)}"
        raise FinetuneError(
            f"The run folder {folder} is taken: {who}. Choose another folder with hydra.run.dir=<folder>."
        )
    _sign(folder)


def latest_checkpoint(run_dir: Path, remove_incomplete: bool = True) -> str:
    """The newest checkpoint that was completely written (the Trainer writes trainer_state.json last)."""
    folder = run_dir / CHECKPOINTS_DIR
    found = sorted(
        (int(m.group(1)), p)
        for p in (folder.iterdir() if folder.is_dir() else [])
        if (m := CHECKPOINT.match(p.name)) and p.is_dir()
    )
    complete = [p for _, p in found if (p / CHECKPOINT_STATE).is_file()]
    if not complete:
        raise FinetuneError(
            f"Nothing to resume in {run_dir}: it has no complete checkpoint in {CHECKPOINTS_DIR}/. "
            "Start it anew without resume=."
        )
    latest = complete[-1]
    for step, partial in found:
        if step > int(CHECKPOINT.match(latest.name).group(1)) and remove_incomplete:
            log.warning("Removing %s: the run was stopped while writing it.", partial)
            shutil.rmtree(partial)
    return str(latest)
