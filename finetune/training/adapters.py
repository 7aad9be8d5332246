"""The `peft` group: full fine-tuning (``peft=none``) or LoRA adapters (``peft=lora``, the ``peft`` package).

With LoRA only the low-rank adapters and the classification head train. The head is new
(randomly initialised), so it trains in full and is saved with the adapter (``modules_to_save``);
without it a reloaded model would get another random head. After training the adapter is
saved alone in ``adapter/`` and merged into the weights, so ``model/`` is a plain
transformers model that every reader (pipeline, Predictor, reports) loads as it is.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from omegaconf import DictConfig, OmegaConf

from finetune.config.schemas import PeftFields
from finetune.errors import FinetuneError
from finetune.files import replaced_atomically

log = logging.getLogger(__name__)

# Linear layers LoRA adapts by default, by model_type: the attention query and value projections
# (peft's own table where it has the architecture). XLNet's attention weights are plain tensors,
# not Linear layers, so its feed-forward layers take the adapters instead. ModernBERT (and mmBERT,
# Ettin: the same architecture) computes query, key and value in one Linear layer, Wqkv, as DeBERTa's
# in_proj does.
TARGET_MODULES = {
    "distilbert": ["q_lin", "v_lin"],
    "xlnet": ["layer_1", "layer_2"],
    "modernbert": ["Wqkv"],
    "eurobert": ["q_proj", "v_proj"],
    "gte": ["q_proj", "v_proj"],
}


def default_target_modules(model) -> List[str]:
    """The Linear layers LoRA adapts in ``model`` when ``peft.target_modules`` is not given."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    model_type = model.config.model_type
    targets = TARGET_MODULES.get(model_type) or PEFT_TARGETS.get(model_type)
    if not targets:
        raise FinetuneError(
            f"peft=lora has no default target modules for model type '{model_type}': name the Linear layers to adapt, "
            f"e.g. peft.target_modules=[{','.join(linear_layer_names(model)[:2])}] "
            f"(its Linear layers: {', '.join(linear_layer_names(model))})."
        )
    return list(targets)


def linear_layer_names(model) -> List[str]:
    import torch

    return sorted(
        {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    )


def head_modules(model) -> List[str]:
    """The classification head: every top-level module with weights outside the pretrained encoder
    (``classifier``; DistilBERT's ``pre_classifier``; DeBERTa's ``pooler``; XLNet's ``sequence_summary``,
    ``logits_proj``)."""
    return [
        name
        for name, module in model.named_children()
        if name != model.base_model_prefix and any(True for _ in module.parameters())
    ]


def parameter_counts(model) -> Dict[str, Any]:
    """Trainable and total parameters of ``model`` as it trains."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "trainable_share": trainable / total if total else 0.0}


@dataclass
class FullFineTuning(PeftFields):
    """Every weight trains; ``model/`` is the trained model itself."""

    trains_every_weight = True  # model.contrastive_pairs may train the body before the head (training/contrastive.py)

    @staticmethod
    def config_errors(peft_cfg: Any) -> List[str]:
        """LoRA settings given without ``peft=lora`` would be ignored: say so."""
        given = [
            k
            for k in ("r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save")
            if peft_cfg.get(k) is not None
        ]
        return [f"peft.{key} is a LoRA setting, but this run fine-tunes every weight: add peft=lora." for key in given]

    def describe(self) -> str:
        """How the run fine-tuned, in words (the model card's Training table)."""
        return "full (every weight)"

    def check_model(self, pretrained) -> None:
        """Nothing to check: every weight trains."""

    def wrap(self, model):
        log.info(describe_counts(parameter_counts(model), "full fine-tuning"))
        return model

    def finish(self, trainer, adapter_dir: Path) -> None:
        """Nothing to merge: the trained model is the model."""


@dataclass
class Lora(PeftFields):
    """LoRA adapters on ``target_modules`` (default: by architecture), the head trained in full."""

    trains_every_weight = False  # adapter/ holds what changed against the pretrained body, and nothing else may

    def describe(self) -> str:
        """How the run fine-tuned, in words (the model card's Training table)."""
        targets = ", ".join(self.target_modules) if self.target_modules else "the architecture's defaults"
        return f"LoRA (r={self.r}, alpha={self.lora_alpha:g}, dropout={self.lora_dropout:g}, on {targets}), merged"

    def targets(self, model) -> List[str]:
        """The Linear layers to adapt in ``model`` (it may be an empty one, on the meta device).

        Names it lacks are refused.
        """
        targets = list(self.target_modules) if self.target_modules else default_target_modules(model)
        missing = [t for t in targets if t not in linear_layer_names(model)]
        if missing:
            raise FinetuneError(
                f"peft.target_modules: {model.config.model_type} has no Linear layer named {', '.join(missing)}; "
                f"its Linear layers: {', '.join(linear_layer_names(model))}."
            )
        return targets

    def check_model(self, pretrained) -> None:
        """Refuse target modules the model lacks from its architecture alone, before the data and the weights load."""
        model = pretrained.empty_model()
        if model is not None:
            self.targets(model)

    def wrap(self, model):
        try:
            from peft import LoraConfig, TaskType, get_peft_model
        except ImportError as error:
            raise FinetuneError(
                'peft=lora needs the peft package: pip install -e ".[peft]" (or pip install peft).'
            ) from error

        targets = self.targets(model)
        head = list(self.modules_to_save) if self.modules_to_save is not None else head_modules(model)
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=targets,
            modules_to_save=list(head),  # a copy: peft adds to the list it gets
        )
        wrapped = get_peft_model(model, config)
        counts = parameter_counts(wrapped)
        log.info(
            describe_counts(
                counts,
                f"LoRA r={self.r}, alpha={self.lora_alpha:g} on {', '.join(targets)}; "
                f"trained in full: {', '.join(head) or 'nothing'}",
            )
        )
        return wrapped

    def finish(self, trainer, adapter_dir: Path) -> None:
        """Save the adapter (with the head) alone into ``adapter_dir``, then merge it.

        ``trainer.model`` becomes a plain model.
        """
        if trainer.is_world_process_zero():
            with replaced_atomically(adapter_dir) as tmp:
                trainer.model.save_pretrained(str(tmp))
        merged = trainer.model.merge_and_unload()
        trainer.model = trainer.model_wrapped = merged


def learning_rate_note(trainer_cfg: DictConfig, adapter: PeftFields) -> str:
    """Which learning rate the run trains with, and why: set in trainer.*, or the default the method brings."""
    rate = trainer_cfg.learning_rate
    written = str(OmegaConf.to_container(trainer_cfg, resolve=False).get("learning_rate"))
    if "peft_learning_rate" not in written:  # a number: the command line, an experiment or a trainer preset set it
        return f"Learning rate: {rate:g} (trainer.learning_rate, as set)"
    if adapter.learning_rate is None:
        return "Learning rate: sized to the data, below (trainer.learning_rate=<rate> sets another)"
    return (
        f"Learning rate: {rate:g} (peft.learning_rate, the fine-tuning method's default: "
        "LoRA's adapters are few weights and want "
        "a much higher rate than full fine-tuning; trainer.learning_rate=<rate> sets another)"
    )


def describe_counts(counts: Dict[str, Any], how: str) -> str:
    return (
        f"Parameters: {counts['trainable']:,} trainable of {counts['total']:,} "
        f"({100 * counts['trainable_share']:.2f}%): {how}"
    )
