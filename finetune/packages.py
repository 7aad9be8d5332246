"""The installed versions of packages, for the records a run, an export and the server keep of what computed them."""

import importlib.metadata
import sys
from typing import Dict, Iterable, Optional

# This package's distribution name (pip install finetune-encoders; the PyPI name "finetune" is another project's):
# the name of its extras in messages (pip install 'finetune-encoders[onnx]').
DISTRIBUTION = "finetune-encoders"


def versions(names: Iterable[str]) -> Dict[str, Optional[str]]:
    """Each package's installed version, None where it is not installed; this package's (by its import or its
    distribution name) is the version of the code that runs, installed or not."""
    this = sys.modules[__package__]  # the finetune package, imported before any of its modules

    found: Dict[str, Optional[str]] = {}
    for name in names:
        if name in ("finetune", DISTRIBUTION):
            found[name] = this.__version__
            continue
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found
