"""Which device a run or a Predictor uses, and which number format it computes natively.

Shared by training and prediction.
"""

from pathlib import Path
from typing import Optional

from finetune.errors import FinetuneError


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (x86 AVX512-BF16 or AMX, Arm BF16).

    Elsewhere PyTorch emulates bf16, which is slower than fp32, so autocast must stay off.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: be safe, use fp32
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


ACCELERATORS = {"cuda": "CUDA GPU", "mps": "Apple silicon GPU (MPS)"}  # in the order hardware=auto prefers them


def available(device: str) -> bool:
    """Whether PyTorch can use ``device`` (cuda or mps) on this machine."""
    import torch

    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    return torch.cuda.is_available()


def choose_device(wanted: str = "auto", setting: str = "hardware.device") -> str:
    """The device to use: for ``auto`` CUDA, then Apple silicon's MPS, then the CPU; a device named must be there.

    ``wanted`` may also name one device of several (``cuda:1``); ``setting`` is the key or option that
    asked, for the message.
    """
    if wanted == "auto":
        return next((device for device in ACCELERATORS if available(device)), "cpu")
    kind = wanted.split(":", 1)[0]
    if kind in ACCELERATORS and not available(kind):
        raise FinetuneError(
            f"{setting}={wanted}, but PyTorch sees no {ACCELERATORS[kind]} on this machine: "
            "use auto (the best there is) or cpu."
        )
    return wanted


# Model types whose transformers code fails under half-precision autocast: DeBERTa (v1) adds its fp32 biases to
# the half-precision queries, then masks the scores with fp32's lowest number, which bf16 and fp16 cannot hold
# ("value cannot be converted to type c10::BFloat16 without overflow", huggingface/transformers#35332).
FP32_ONLY = frozenset({"deberta"})
HALF_FAILS = "models fail in half precision in transformers (transformers#35332)"  # said of an FP32_ONLY type


def resolve_precision(precision: str, device: str, setting: str, model_type: Optional[str] = None) -> str:
    """``auto`` becomes bf16 (fp16 on GPUs without it) where the hardware computes it natively, else fp32.

    On Apple silicon (``mps``) ``auto`` is fp32: half precision there is untested by this project. A model type
    of ``FP32_ONLY`` gets fp32 from ``auto``, and half precision asked for it is refused.
    """
    import torch

    kind = device.split(":", 1)[0]
    if model_type in FP32_ONLY:
        if precision in ("bf16", "fp16"):
            raise FinetuneError(
                f"{setting}={precision}: {model_type} {HALF_FAILS}: use fp32, or auto, which picks it for them."
            )
        return "fp32"
    if precision == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if kind == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and kind == "cpu":
        raise FinetuneError(f"{setting}=fp16 needs a GPU; on a CPU use bf16 or fp32.")
    return precision
