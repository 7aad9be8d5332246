"""Data-parallel runs (torchrun, accelerate launch): one run folder for all ranks, one log.

Every rank runs ``run.py`` and composes its own config; if each resolved the run folder's
timestamp by itself, ranks started a second apart would write into different folders.
So before Hydra starts, rank 0 publishes its start time through the launcher's key-value
store and every rank names the run folder from that (the ``run_time`` resolver). Rank 0
alone then claims the folder (it may have to take the next free name), and publishes the
folder it got through the same store (``from_rank_zero``).
"""

import logging
import os
import sys
import time
from datetime import datetime, timedelta
from typing import Any, Callable, Optional

START_TIME_ENV = "FINETUNE_START_TIME"
_store: Optional[Any] = None  # rank 0 may host the store: it must outlive the other ranks' reads


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def agree_on_start_time() -> None:
    """Set FINETUNE_START_TIME to rank 0's start time on every rank of a multi-process launch."""
    if world_size() <= 1 or START_TIME_ENV in os.environ:
        return
    store = _shared_store()
    if rank() == 0:
        store.set("start_time", repr(time.time()))
    os.environ[START_TIME_ENV] = store.get("start_time").decode()


def from_rank_zero(key: str, compute: Callable[[], str]) -> str:
    """``compute()`` on rank 0, its result on every rank; a single process just computes it.

    When rank 0 stops with a message (SystemExit), the other ranks stop too, silently: the
    message is printed once.
    """
    if world_size() <= 1:
        return compute()
    store = _shared_store()
    if rank() != 0:
        value = store.get(key).decode()
        if value.startswith("\0"):
            raise SystemExit(1)
        return value
    try:
        value = compute()
    except SystemExit:
        store.set(key, "\0")
        raise
    store.set(key, value)
    return value


def _shared_store() -> Any:
    global _store
    if _store is not None:
        return _store
    from torch.distributed import PrefixStore, TCPStore

    # torchrun's agent hosts a store at MASTER_ADDR:MASTER_PORT; without an agent, rank 0
    # hosts one there, shared (multi-tenant) with the process group created later.
    agent_hosts_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size(),
        is_master=rank() == 0 and not agent_hosts_store,
        timeout=timedelta(minutes=5),
        multi_tenant=True,
    )
    _store = PrefixStore(f"finetune/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    return _store


def run_time(pattern: str) -> str:
    """Resolver ``${run_time:%Y-%m-%d_%H-%M-%S}``: now, or the start time all ranks agreed on."""
    start = os.environ.get(START_TIME_ENV)
    return (datetime.fromtimestamp(float(start)) if start else datetime.now()).strftime(pattern)


def quiet_replica_logging() -> None:
    """On ranks other than 0, drop Hydra's console and file handlers: rank 0 logs for the run.

    Warnings and errors still reach stderr, marked with the rank.
    """
    if rank() == 0:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[rank {rank()}][%(levelname)s] %(message)s"))
    handler.setLevel(logging.WARNING)
    root.addHandler(handler)
