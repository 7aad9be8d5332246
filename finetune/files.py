"""Files that exist only complete: write beside the target under a temporary name, then rename."""

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from finetune.errors import FinetuneError


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a temporary path (file or folder) beside ``path``; on success it replaces ``path``.

    A crash or an error inside the block leaves ``path`` as it was (or absent), never partial.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    _remove(tmp)  # left over from a run that was killed while writing
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if path.is_dir() and not path.is_symlink():  # os.replace cannot overwrite a non-empty folder
        shutil.rmtree(path)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def refuse_to_overwrite(path: Path, overwrite: bool, option: str = "--output") -> None:
    """Every command's rule: an output that exists is replaced only with ``--overwrite``. The one message names the
    option, the file and the flag; call it before any long work."""
    path = Path(path)
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    what = "folder" if path.is_dir() else "file"
    raise FinetuneError(f"{option} {path} exists; add --overwrite to replace it, or choose another {what}.")
