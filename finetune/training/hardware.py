"""The `hardware` group: pick the device and number format, and turn them into TrainingArguments."""

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from finetune.config.schemas import HardwareFields
from finetune.devices import FP32_ONLY, HALF_FAILS, choose_device, cpu_has_native_bf16, resolve_precision
from finetune.distributed import world_size
from finetune.errors import FinetuneError

log = logging.getLogger(__name__)


@dataclass
class Hardware(HardwareFields):
    def resolve(self, model_type: Optional[str] = None) -> Dict[str, Any]:
        """The TrainingArguments this hardware setting implies (trainer.* settings win over them), for a model of
        ``model_type`` (config.json's; None where it is not at hand yet: ``check_model`` tells once loaded)."""
        import torch

        if self.distributed and world_size() <= 1:
            raise FinetuneError(
                "hardware=ddp runs one process per device and needs a launcher: "
                "torchrun --nproc_per_node=N run.py hardware=ddp ... "
                "(or accelerate launch --multi_gpu --num_processes N run.py hardware=ddp ...)"
            )
        self.device_used = choose_device(self.device)  # cuda, mps or cpu
        on_gpu = self.device_used == "cuda"
        precision = resolve_precision(self.precision, self.device_used, "hardware.precision", model_type)
        if model_type in FP32_ONLY and self.precision == "auto":
            log.info("Precision fp32: %s %s", model_type, HALF_FAILS)
        args: Dict[str, Any] = {
            "use_cpu": self.device_used == "cpu",  # otherwise the Trainer takes CUDA, or MPS where that is all there is
            "bf16": precision == "bf16",
            "fp16": precision == "fp16",
            "dataloader_num_workers": self.dataloader_num_workers,
            "dataloader_pin_memory": on_gpu and self.pin_memory is not False,
            "torch_compile": self.torch_compile,
        }
        if on_gpu and self.tf32 and torch.cuda.get_device_capability()[0] >= 8:
            args["tf32"] = True
        # Set either way: the library's default optimizer depends on its version and torch's.
        args["optim"] = "adamw_torch_fused" if self.fused_optimizer else "adamw_torch"
        if world_size() > 1:
            args["ddp_find_unused_parameters"] = False  # classifiers use every parameter: skip the search
        self.precision_used = precision
        self.on_gpu = on_gpu
        self.padding_multiple = self.pad_to_multiple_of or (8 if on_gpu or self.torch_compile else 1)
        self.integer_dropout = (
            self.fast_dropout if self.fast_dropout is not None else self.device_used == "cpu"
        )  # measured on CPUs
        self.resolved = args
        return args

    def summary(self) -> Dict[str, Any]:
        """Device, precision and processes, as recorded in environment.json."""
        import torch

        if self.on_gpu:
            device = {
                "device": "CUDA",
                "gpu": torch.cuda.get_device_name(torch.cuda.current_device()),
                "tf32": bool(self.resolved.get("tf32")),
                "pin_memory": self.resolved["dataloader_pin_memory"],
            }
        elif self.device_used == "mps":
            device = {"device": "MPS"}
        else:
            device = {"device": "CPU", "threads": torch.get_num_threads(), "cpu_native_bf16": cpu_has_native_bf16()}
        return {
            **device,
            "precision": self.precision_used,
            "fused_adamw": self.resolved.get("optim") == "adamw_torch_fused",
            "pad_to_multiple_of": self.padding_multiple,
            "fast_dropout": self.integer_dropout,
            "torch_compile": self.torch_compile,
            "processes": world_size(),
        }

    def describe(self) -> str:
        info = self.summary()
        on = lambda flag: "on" if flag else "off"  # noqa: E731
        if self.on_gpu:
            device = (
                f"Using device: CUDA\nGPU: {info['gpu']}\n"
                f"TF32: {on(info['tf32'])}, pinned memory: {on(info['pin_memory'])}"
            )
        else:
            device = (
                "Using device: MPS (Apple silicon)"
                if info["device"] == "MPS"
                else f"Using device: CPU ({info['threads']} threads)"
            )
        padding = f"multiples of {self.padding_multiple} tokens" if self.padding_multiple > 1 else "to the longest row"
        processes = f"\nProcesses: {info['processes']} (data parallel)" if info["processes"] > 1 else ""
        return (
            f"{device}\nPrecision: {self.precision_used}, fused AdamW: {on(info['fused_adamw'])}, "
            f"batch padding: {padding}, "
            f"fast dropout: {on(self.integer_dropout)}, torch.compile: {on(self.torch_compile)}{processes}"
        )

    def check_model(self, model, args) -> None:
        """A model that fails in the half precision ``args`` (the TrainingArguments) hold: one line, before any step.
        Where auto chose it before the model's type was known (a hub id not yet downloaded), or trainer.bf16 or
        trainer.fp16 was set by hand."""
        model_type = model.config.model_type
        half = "bf16" if args.bf16 else "fp16" if args.fp16 else None
        if model_type not in FP32_ONLY or half is None:
            return
        resolve_precision(self.precision, self.device_used, "hardware.precision", model_type)  # half asked: refused
        if self.precision_used == "fp32":  # the hardware chose fp32: the trainer group asked for half precision
            raise FinetuneError(
                f"trainer.{half}=true: {model_type} {HALF_FAILS}: leave it unset "
                "(hardware.precision=auto picks fp32 for them)."
            )
        raise FinetuneError(
            f"hardware.precision=auto chose {self.precision_used} before the model's config.json was at hand, "
            f"and {model_type} {HALF_FAILS}: run again (the model is "
            "downloaded now, so auto picks fp32), or set hardware.precision=fp32."
        )

    def prepare_model(self, model) -> None:
        """What this hardware changes in the model before training: dropout's masks (``fast_dropout``)."""
        if self.integer_dropout:
            from finetune.training.dropout import use_integer_mask_dropout

            log.debug("Dropout layers with integer masks: %d", use_integer_mask_dropout(model))

    def tokenizer_processes(self, rows: int) -> Optional[int]:
        """Processes for tokenization: worth it only on data large enough to amortise the start-up."""
        if self.num_proc is not None:
            return self.num_proc if self.num_proc > 1 else None
        return min(os.cpu_count() or 1, 8) if rows >= 50_000 else None
