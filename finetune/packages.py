"""The installed versions of packages, for the records a run, an export and the server keep of what computed them."""

import importlib.metadata
from typing import Dict, Iterable, Optional


def versions(names: Iterable[str]) -> Dict[str, Optional[str]]:
    """Each package's installed version, None where it is not installed."""
    found: Dict[str, Optional[str]] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found
