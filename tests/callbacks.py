"""Trainer callbacks the tests add to real runs from the command line (+callbacks.<name>._target_=tests.callbacks.X)."""

import json
import os
import signal
from pathlib import Path

import torch
from transformers import TrainerCallback


class RecordCalls(TrainerCallback):
    """Appends each event it is called for, with the step, to a JSON-lines file."""

    def __init__(self, path: str):
        self.path = Path(path)

    def _record(self, event: str, state) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(
                json.dumps({"event": event, "step": state.global_step, "batch_size": state.train_batch_size}) + "\n"
            )

    def on_train_begin(self, args, state, control, **kwargs):
        self._record("train_begin", state)

    def on_evaluate(self, args, state, control, **kwargs):
        self._record("evaluate", state)

    def on_train_end(self, args, state, control, **kwargs):
        self._record("train_end", state)


class KillAfterSave(TrainerCallback):
    """SIGKILL the run right after the checkpoint of ``step`` is written: a crash, with no chance to clean up."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class OutOfMemoryAbove(TrainerCallback):
    """Raises the error PyTorch raises when a CUDA batch does not fit, for every batch larger than ``batch_size``."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size

    def on_step_begin(self, args, state, control, **kwargs):
        if state.train_batch_size > self.batch_size:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried a batch of {state.train_batch_size} (more than {self.batch_size})."
            )
