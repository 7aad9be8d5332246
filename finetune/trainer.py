"""The `trainer` group: TrainingArguments from the config, a Trainer with dynamic padding and metrics."""

import math
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from omegaconf import DictConfig

from finetune.config import FinetuneError


def compute_metrics(eval_pred) -> Dict[str, float]:
    """Accuracy and macro F1, computed locally (``evaluate.load`` needs the Hub)."""
    from sklearn.metrics import accuracy_score, f1_score

    logits, labels = eval_pred.predictions, eval_pred.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    predictions = logits.argmax(axis=-1)
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
    except InstantiationException as error:
        cause = error.__cause__ or error
        raise FinetuneError(f"Invalid trainer settings: {cause}") from error


def build_trainer(args, model, tokenizer, train_dataset, eval_dataset):
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback

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

    class TokenCountingTrainer(Trainer):
        """A Trainer that also counts real and padded tokens: padding is computation wasted."""

        real_tokens = computed_tokens = 0

        def training_step(self, model, inputs, *args, **kwargs):
            mask = inputs.get("attention_mask")
            if mask is not None:
                self.real_tokens += int(mask.sum())
                self.computed_tokens += mask.numel()
            return super().training_step(model, inputs, *args, **kwargs)

    return TokenCountingTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),  # pads each batch to its own longest row
        compute_metrics=compute_metrics,
        callbacks=[StopOnNonFiniteLoss()],
    )


def without_prefix(metrics: Mapping[str, float], prefix: str) -> Dict[str, float]:
    return {k[len(prefix) + 1 :] if k.startswith(prefix + "_") else k: v for k, v in metrics.items()}


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
