"""Which number format a device computes natively: shared by training (the hardware group) and prediction."""

from pathlib import Path

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


def resolve_precision(precision: str, on_gpu: bool, setting: str) -> str:
    """``auto`` becomes bf16 (fp16 on GPUs without it) where the hardware computes it natively, else fp32."""
    import torch

    if precision == "auto":
        if on_gpu:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and not on_gpu:
        raise FinetuneError(f"{setting}=fp16 needs a CUDA GPU; on a CPU use bf16 or fp32.")
    return precision
