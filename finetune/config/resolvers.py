"""The resolvers the YAML files use (``${local_model:...}``, ``${glue_file:...}``, the run folder's name)."""

import importlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import OmegaConf

missing_run_dirs = set()  # resume=<folder> named a folder that was not there: Hydra is about to create it


def local_model_path(package: str, fallback: str) -> str:
    """Resolver ``${local_model:package,hub_id}``: the folder a model package ships, else the hub id."""
    if importlib.util.find_spec(package) is None:
        return fallback
    return str(importlib.import_module(package).get_model_path())


def glue_file(glue_dir: Optional[str], relative: str, optional: Optional[str] = None) -> Optional[str]:
    """Resolver ``${glue_file:${glue_dir},RTE/train.tsv[,optional]}``: that file of a local GLUE folder.

    None without ``glue_dir`` (the task reads the hub), and None for an optional file that is
    not there (GLUE's test sets are often left out).
    """
    if not glue_dir:
        return None
    path = Path(glue_dir).expanduser() / relative
    return str(path) if path.is_file() or optional is None else None


CONFIG_DIR_ENV = "FINETUNE_CONFIG_DIR"


def config_dirs() -> List[str]:
    """Resolver for ``hydra.searchpath``: the folders FINETUNE_CONFIG_DIR names (``:``-separated).

    Each may hold ``task/``, ``model/``, ``experiment/``, ... YAML files of its own, composed as
    if they were in ``conf/``; a preset of the same name in ``conf/`` wins.
    """
    value = os.environ.get(CONFIG_DIR_ENV, "")
    folders = [Path(part).expanduser().absolute() for part in value.split(os.pathsep) if part.strip()]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise SystemExit(f"{CONFIG_DIR_ENV}={value}: no such folder: {', '.join(missing)}.")
    return [f"file://{f}" for f in folders]


def resume_run_dir(resume: Any, new_run_dir: str) -> str:
    """Resolver for ``hydra.run.dir``: the folder named by ``resume=<folder>``, else a new one."""
    if not isinstance(resume, str):
        return new_run_dir
    if not Path(resume).expanduser().is_dir():  # Hydra is about to create it: remember it was not there
        missing_run_dirs.add(Path(resume).expanduser().resolve())
    return resume


def peft_learning_rate(fallback: float, *, _root_: Any) -> float:
    """Resolver for ``trainer.learning_rate``: the rate the fine-tuning method brings (``peft.learning_rate``;
    LoRA trains few weights and wants a much higher one), else ``fallback``. A value the user sets replaces it."""
    rate = OmegaConf.select(_root_, "peft.learning_rate", default=None)
    return fallback if rate is None else rate


def file_stem(path: Any) -> Optional[str]:
    """Resolver ``${file_stem:${.data_files.train}}``: a file's name without its folder and extension, as a name
    for run folders (characters other than letters, digits, ``-``, ``_`` and ``.`` become ``_``); of several
    files, the first's."""
    if path is not None and not isinstance(path, str):
        path = next(iter(path), None)
    if not path:
        return None
    return re.sub(r"[^\w.-]+", "_", Path(str(path)).stem) or None


def task_title(choice: str, *, _root_: Any) -> str:
    """Resolver for run folder names: ``task.title`` (the file preset's: its train file's name), else the preset's."""
    title = OmegaConf.select(_root_, "task.title", default=None)
    return str(title) if title else choice


def register_resolvers() -> None:
    from finetune.distributed import run_time

    for name, resolver, use_cache in (
        ("local_model", local_model_path, False),
        ("glue_file", glue_file, False),
        ("run_time", run_time, True),
        ("resume_run_dir", resume_run_dir, False),
        ("config_dirs", config_dirs, False),
        ("peft_learning_rate", peft_learning_rate, False),
        ("file_stem", file_stem, False),
        ("task_title", task_title, False),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=use_cache)
