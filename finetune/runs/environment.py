"""``environment.json``: what a run ran on and with, written when it starts, so that a run that fails later still
tells it: the hardware, the packages and the code's version, the command, and the data's fingerprints."""

import hashlib
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from finetune.packages import versions

PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "tokenizers",
    "scikit-learn",
    "hydra-core",
    "omegaconf",
    "finetune",
)


def data_fingerprint(splits, columns: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Rows and a SHA-256 of the text and label columns of each split, as trained and evaluated on."""
    fingerprint = {}
    for name, split in splits.items():
        digest = hashlib.sha256()
        present = [c for c in columns if c in split.column_names]  # an unlabeled test split has no labels
        for batch in split.select_columns(present).iter(batch_size=10_000):
            for column in present:
                digest.update("\x1f".join(map(str, batch[column])).encode("utf-8"))
                digest.update(b"\x1e")
        fingerprint[name] = {"rows": len(split), "sha256": digest.hexdigest()}
    return fingerprint


def code_version() -> Dict[str, Any]:
    """The git commit of this code and whether tracked files differ from it (None outside a checkout)."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> Optional[str]:
        try:
            result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def environment(hardware: Mapping[str, Any], data: Mapping[str, Any]) -> Dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions(PACKAGES),
        "hardware": dict(hardware),
        "code": code_version(),
        "command": " ".join(
            [*(["python"] if sys.argv[0].endswith(".py") else []), Path(sys.argv[0]).name, *sys.argv[1:]]
        ),
        "data": dict(data),
    }
