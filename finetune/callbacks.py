"""The Trainer callbacks every run uses, listed in ``build_trainer``; imported only when a run trains."""

import logging
import math
import signal
import threading
from typing import Any, Dict, Optional

import torch
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

from finetune.config import FinetuneError

log = logging.getLogger("finetune.trainer")


class StopOnSignal(TrainerCallback):
    """SIGINT / SIGTERM: finish the step, save a checkpoint, stop. A second SIGINT quits at once."""

    def __init__(self):
        self.signum: Optional[int] = None
        self.previous: Dict[int, Any] = {}

    def handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: stopping after this step and saving a checkpoint (Ctrl-C again quits at once).", signal.Signals(signum).name)

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
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
