"""The `trainer` group: TrainingArguments from the config, a Trainer with dynamic padding and metrics."""

import logging
import math
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from finetune.config import FinetuneError

log = logging.getLogger(__name__)
TOKEN_COUNTS = "TokenCounts"


class StoppedBySignal(FinetuneError):
    """Training was stopped by SIGINT / SIGTERM after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def predicted_ids(predictions):
    """Class ids from the Trainer's predictions (logits, or a tuple whose first item is the logits)."""
    logits = predictions[0] if isinstance(predictions, tuple) else predictions
    return logits.argmax(axis=-1)


def compute_metrics(eval_pred) -> Dict[str, float]:
    """Accuracy and macro F1, computed locally (``evaluate.load`` needs the Hub)."""
    from sklearn.metrics import accuracy_score, f1_score

    labels, predictions = eval_pred.label_ids, predicted_ids(eval_pred.predictions)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions, average="macro")),
    }


def training_arguments(trainer_cfg: DictConfig, hardware_args: Mapping[str, Any], run_dir: Path):
    """Instantiate ``trainer_cfg`` (TrainingArguments); hardware fills what the config leaves unset."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    # The Trainer's TensorBoard callback writes where this says, also after training (test scores).
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "logs")
    defaults = {k: v for k, v in hardware_args.items() if k not in trainer_cfg}
    try:
        return instantiate(trainer_cfg, output_dir=str(run_dir / "checkpoints"), _convert_="all", **defaults)
    except InstantiationException as error:  # TrainingArguments.__post_init__ rejected a value
        cause = error.__cause__ or error
        keys = settings_named_in(str(cause), trainer_cfg, "trainer") or ["trainer.*"]
        raise FinetuneError(f"Invalid trainer settings: {', '.join(keys)}: {one_line(str(cause))}") from error


def settings_named_in(message: str, node: DictConfig, prefix: str) -> List[str]:
    """The settings of ``node`` that a library's error message names: by key, else by their (text) value.

    Libraries name their own parameters (``--logging_steps``) or only the bad value (``bogus is not a
    valid SchedulerType``); either way the user needs the key to change.
    """
    words = set(re.findall(r"\w+", message))
    values = {k: v for k, v in OmegaConf.to_container(node, resolve=False).items() if k != "_target_"}
    named = [k for k in values if k in words] or [k for k, v in values.items() if isinstance(v, str) and v in words]
    return [f"{prefix}.{k}" for k in named]


def one_line(text: str, limit: int = 400) -> str:
    """A library's message on one line (they often span several), cut to a readable length."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_trainer(args, model, tokenizer, train_dataset, eval_dataset):
    """A Trainer with dynamic padding, metrics, and the callbacks below; ``trainer.stop`` tells of a signal."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback
    from transformers.integrations import TensorBoardCallback
    from transformers.trainer_pt_utils import LengthGroupedSampler

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

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        """Length-grouped batches in an order fixed by seed and epoch (the library's draws from the global
        RNG), so a resumed run trains on the same batches as an uninterrupted one."""

        def __init__(self, batch_size: int, lengths, seed: int):
            super().__init__(batch_size, lengths=lengths)
            self.seed, self.epoch = seed, 0

        def set_epoch(self, epoch: int) -> None:  # called by the Trainer before each epoch
            self.epoch = epoch

        def __iter__(self):
            self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
            return super().__iter__()

    class TokenCountingTrainer(Trainer):
        """A Trainer that also counts real and padded tokens: padding is computation wasted."""

        real_tokens = computed_tokens = 0
        counts_restored = False

        def _save_checkpoint(self, model, trial):
            # Kept in trainer_state.json (restoring callbacks is off), so a resumed run counts on.
            self.state.stateful_callbacks[TOKEN_COUNTS] = {"real": self.real_tokens, "computed": self.computed_tokens}
            super()._save_checkpoint(model, trial)

        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
            return sampler

        def training_step(self, model, inputs, *args, **kwargs):
            if not self.counts_restored:  # the state is a checkpoint's when resuming
                counts = self.state.stateful_callbacks.get(TOKEN_COUNTS, {})
                self.real_tokens, self.computed_tokens = counts.get("real", 0), counts.get("computed", 0)
                self.counts_restored = True
            mask = inputs.get("attention_mask")
            if mask is not None:
                self.real_tokens += int(mask.sum())
                self.computed_tokens += mask.numel()
            return super().training_step(model, inputs, *args, **kwargs)

    trainer = TokenCountingTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),  # pads each batch to its own longest row
        compute_metrics=compute_metrics,
        callbacks=[StopOnNonFiniteLoss()],
    )
    if trainer.pop_callback(TensorBoardCallback) is not None:  # report_to includes tensorboard
        trainer.add_callback(ResumableTensorBoard())
    trainer.stop = StopOnSignal()
    trainer.add_callback(trainer.stop)
    return trainer


def without_prefix(metrics: Mapping[str, float], prefix: str) -> Dict[str, float]:
    return {k[len(prefix) + 1 :] if k.startswith(prefix + "_") else k: v for k, v in metrics.items()}


def mean_training_loss(trainer) -> float:
    """The training loss over every logged step, also those before a resume (the Trainer's own mean starts anew)."""
    total = steps = previous = 0
    for entry in trainer.state.log_history:
        if "loss" in entry and "step" in entry:
            total += entry["loss"] * (entry["step"] - previous)
            steps += entry["step"] - previous
            previous = entry["step"]
    return total / steps if steps else float("nan")


def best_validation_metrics(trainer) -> Dict[str, float]:
    """The validation scores of the model the Trainer kept: read from its log, or measured now."""
    step: Optional[int] = trainer.state.best_global_step
    if trainer.args.load_best_model_at_end and step is not None:
        for entry in trainer.state.log_history:
            if entry.get("step") == step and "eval_loss" in entry:
                return without_prefix({k: v for k, v in entry.items() if k.startswith("eval_")}, "eval")
    return without_prefix(trainer.evaluate(), "eval")


HPARAMS = ("learning_rate", "per_device_train_batch_size", "num_train_epochs", "weight_decay", "warmup_steps", "seed")


def log_hparams(log_dir: Path, cfg: DictConfig, names: Mapping[str, str], metrics: Mapping[str, Any]) -> None:
    """Record the run's hyperparameters with its final scores for TensorBoard's HParams tab."""
    from torch.utils.tensorboard import SummaryWriter

    hparams = {key: cfg.trainer.get(key) for key in HPARAMS if cfg.trainer.get(key) is not None}
    hparams.update(names, name_or_path=cfg.model.name_or_path, max_length=cfg.task.max_length)
    scores = {
        f"hparams/{split}_{name}": value
        for split in ("validation", "test")
        for name, value in (metrics.get(split) or {}).items()
        if name in ("accuracy", "f1", "loss")
    }
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        writer.add_hparams(hparams, scores, run_name=".")  # "." keeps it in the run's own log folder
