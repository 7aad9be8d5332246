"""The `callbacks` group: the Trainer callbacks a run uses, instantiated from ``conf/callbacks/``,
and ours among them (non-finite loss, TensorBoard on resume, early stopping); and the one every run
has whether or not its config lists it (``RUN_CALLBACKS``: the signal stop). Imported only when a run trains."""

import logging
import math
import signal
import threading
from typing import Any, Dict, List, Optional

import torch
from omegaconf import DictConfig
from transformers import EarlyStoppingCallback, TrainerCallback
from transformers.integrations import INTEGRATION_TO_CALLBACK, TensorBoardCallback

from finetune.errors import FinetuneError

log = logging.getLogger("finetune.training.trainer")


class StopOnSignal(TrainerCallback):
    """SIGINT / SIGTERM: finish the step, save a checkpoint, stop. A second SIGINT quits at once."""

    def __init__(self):
        self.signum: Optional[int] = None
        self.previous: Dict[int, Any] = {}

    def handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s received: stopping after this step and saving a checkpoint (Ctrl-C again quits at once).",
            signal.Signals(signum).name,
        )

    def on_train_begin(self, args, state, control, **kwargs):
        # Not twice: trainer.auto_find_batch_size begins training again with a smaller batch.
        if (
            threading.current_thread() is threading.main_thread() and not self.previous
        ):  # signal handlers live there only
            self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_step_end(self, args, state, control, **kwargs):
        signum = self.signum
        if args.world_size > 1:  # every rank stops at the same step, or the others wait forever
            import torch.distributed as dist

            flag = torch.tensor([signum or 0], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = self.signum = int(flag.item()) or None
        if signum is not None:
            # Logging now too keeps the training-loss record whole across the resume.
            control.should_log = control.should_save = control.should_training_stop = True
            # When training ends, save_total_limit=1 deletes every checkpoint but the best one,
            # and the best model is loaded: neither helps a run that stops to be resumed.
            args.save_total_limit, args.load_best_model_at_end = None, False

    def on_train_end(self, args, state, control, **kwargs):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}


# What a run cannot work without (train.py asks StopOnSignal whether a signal stopped training): the
# Trainer gets one of each (``with_run_callbacks``), listed in the config or not. Their classes by name,
# for the code that cannot import this module (a resume compares configs): config.checks.RUN_CALLBACK_TARGETS.
RUN_CALLBACKS = (StopOnSignal,)


def with_run_callbacks(callbacks: List[TrainerCallback]) -> List[TrainerCallback]:
    """``callbacks`` with one of each ``RUN_CALLBACKS`` class: the first listed (a preset or a run saved before
    the code added them may list one), else a new one, placed first. Another of the same class is left out."""
    kept: List[TrainerCallback] = []
    for callback in callbacks:
        required = next((cls for cls in RUN_CALLBACKS if isinstance(callback, cls)), None)
        if required is None or not any(isinstance(c, required) for c in kept):
            kept.append(callback)
    missing = [cls() for cls in RUN_CALLBACKS if not any(isinstance(c, cls) for c in kept)]
    return missing + kept


class ResumableTensorBoard(TensorBoardCallback):
    """On resume, TensorBoard hides what was logged after the checkpoint (purge_step): no step twice."""

    def on_train_begin(self, args, state, control, **kwargs):
        if self.tb_writer is None and state.is_world_process_zero and state.global_step > 0 and self.logging_dir:
            self.tb_writer = self._SummaryWriter(log_dir=self.logging_dir, purge_step=state.global_step + 1)
        super().on_train_begin(args, state, control, **kwargs)


class StopOnNonFiniteLoss(TrainerCallback):
    """Training on after the loss became NaN or inf only produces garbage: stop, and say where."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The Trainer leaves non-finite losses out of the logged mean; the gradient norm still shows them.
        for key, what in (("loss", "training loss"), ("grad_norm", "gradient norm")):
            value = (logs or {}).get(key)
            if isinstance(value, float) and not math.isfinite(value):
                raise FinetuneError(
                    f"The {what} became {value} at step {state.global_step} (learning rate "
                    f"{logs.get('learning_rate', args.learning_rate):.3g}). Lower trainer.learning_rate, "
                    "or use hardware.precision=fp32 if half precision overflows."
                )


class EarlyStopping(EarlyStoppingCallback):
    """transformers' early stopping, which keeps its count of evaluations without improvement across a
    resume (read back from the checkpoint's trainer_state.json), and tells where and why it stopped."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0):
        super().__init__(early_stopping_patience, early_stopping_threshold)
        self.stopped: Optional[Dict[str, Any]] = None

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        # A resumed state is the checkpoint's; a fresh one (step 0, also a retry of auto_find_batch_size) counts from 0.
        saved = state.stateful_callbacks.get(type(self).__name__, {}) if state.global_step > 0 else {}
        self.early_stopping_patience_counter = saved.get("attributes", {}).get("early_stopping_patience_counter", 0)

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        best = state.best_metric  # before this evaluation: the Trainer updates it afterwards
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if (
            control.should_training_stop
            and self.stopped is None
            and self.early_stopping_patience_counter >= self.early_stopping_patience
        ):
            key = (
                args.metric_for_best_model
                if args.metric_for_best_model.startswith("eval_")
                else f"eval_{args.metric_for_best_model}"
            )
            evaluations = sum(
                1 for entry in state.log_history if key in entry
            )  # this one included: it was logged first
            self.stopped = {
                "evaluation": evaluations,
                "step": state.global_step,
                "epoch": state.epoch,
                "metric": key,
                "value": metrics.get(key),
                "best": best,
                "patience": self.early_stopping_patience,
                "threshold": self.early_stopping_threshold,
            }
            log.info(
                "Early stopping at evaluation %d (step %d, epoch %.2f): %s has not improved on the best %.4g "
                "by more than %g for %d evaluations (patience %d); the best checkpoint is kept.",
                evaluations,
                state.global_step,
                state.epoch or 0,
                key,
                best,
                self.early_stopping_threshold,
                self.early_stopping_patience_counter,
                self.early_stopping_patience,
            )

    def report(self) -> Dict[str, Any]:
        """What metrics.json says of early stopping: whether it stopped the run, where, and why."""
        settings = {"patience": self.early_stopping_patience, "threshold": self.early_stopping_threshold}
        return {"stopped": True, **self.stopped} if self.stopped else {"stopped": False, **settings}


def instantiate_callbacks(callbacks_cfg: Optional[DictConfig]) -> List[TrainerCallback]:
    """The callbacks ``callbacks.<name>._target_`` names, in order (a null entry is left out)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    callbacks = []
    for name, node in (callbacks_cfg or {}).items():
        if node is None:
            continue
        try:
            callback = instantiate(node, _convert_="all")
        except InstantiationException as error:
            raise FinetuneError(
                f"callbacks.{name}: cannot create {node._target_}: {error.__cause__ or error}"
            ) from error
        if not isinstance(callback, TrainerCallback):
            raise FinetuneError(f"callbacks.{name}: {node._target_} is not a transformers.TrainerCallback.")
        callbacks.append(callback)
    return callbacks


def add_callbacks(trainer, callbacks: List[TrainerCallback]) -> None:
    """Add ``callbacks`` to the Trainer's own. One that extends a tracker the Trainer added for
    ``trainer.report_to`` (TensorBoard, MLflow, ...) takes its place, and is left out when
    report_to does not name that tracker."""
    trackers = tuple(INTEGRATION_TO_CALLBACK.values())
    for callback in callbacks:
        if isinstance(callback, trackers):
            replaced = next(
                (
                    c
                    for c in trainer.callback_handler.callbacks
                    if type(c) in trackers and isinstance(callback, type(c))
                ),
                None,
            )
            if replaced is None:
                continue
            trainer.callback_handler.remove_callback(replaced)
        trainer.add_callback(callback)


def early_stopping_report(trainer) -> Optional[Dict[str, Any]]:
    """The early stopping callback's report, or None when the run has none."""
    stopper = next((c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStopping)), None)
    return stopper.report() if stopper else None
