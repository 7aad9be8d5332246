"""Errors a user can fix, shown in one line, and the setup stage a library's error is told by."""

import re
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Sequence, Tuple

STAGE_ATTRIBUTE = "finetune_setup_stage"  # set on a library's exception raised inside setup_stage()


class FinetuneError(Exception):
    """A problem the user can fix (config, data, model, environment): shown without traceback."""


class StoppedBySignal(FinetuneError):
    """Training was stopped by SIGINT / SIGTERM after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


Stage = Tuple[str, Tuple[str, ...], str]  # what was being done, the config groups it reads, the keys to check


@contextmanager
def setup_stage(what: str, groups: Sequence[str], keys: str) -> Iterator[None]:
    """Mark an error a library raises in this block as a setup error: a setting to change, not a fault.

    ``what`` names the stage ("Loading the data"), ``groups`` the config groups whose keys a
    library's message may name, ``keys`` the settings to check when it names none. The run's
    launcher (finetune/launch.py) turns a marked error into one line. Errors this project raises
    itself (FinetuneError, or a bug in its own code) are left as they are; the innermost stage wins.
    """
    try:
        yield
    except Exception as error:
        if not isinstance(error, FinetuneError) and stage_of(error) is None and not _raised_here(error):
            setattr(error, STAGE_ATTRIBUTE, (what, tuple(groups), keys))
        raise


def stage_of(error: BaseException) -> Optional[Stage]:
    """The setup stage ``error`` was raised in, if a library raised it inside ``setup_stage``."""
    return getattr(error, STAGE_ATTRIBUTE, None)


def _raised_here(error: BaseException) -> bool:
    """Whether the innermost frame is this project's code: a bug to see with its traceback."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith("finetune.")


def settings_named_in(message: str, node: Any, prefix: str) -> List[str]:
    """The settings of ``node`` (a config group) that a library's error message names.

    By key, else by their (text) value: libraries name their own parameters (``--logging_steps``) or
    only the bad value (``bogus is not a valid SchedulerType``); either way the user needs the key to change.
    """
    words = set(re.findall(r"\w+", message))
    from omegaconf import OmegaConf

    values = {k: v for k, v in OmegaConf.to_container(node, resolve=False).items() if k != "_target_"}
    named = [k for k in values if k in words] or [k for k, v in values.items() if isinstance(v, str) and v in words]
    return [f"{prefix}.{k}" for k in named]


def unwrapped(error: BaseException) -> BaseException:
    """The FinetuneError a library wrapped (Hydra's ``instantiate`` wraps what a constructor raises), else the error."""
    return error.__cause__ if isinstance(error.__cause__, FinetuneError) else error


def one_line(text: str, limit: int = 400) -> str:
    """A library's message on one line (they often span several), cut to a readable length."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
