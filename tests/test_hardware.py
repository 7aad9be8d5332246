"""The hardware group: what `auto` picks on a CUDA machine (faked here) and on this CPU."""

import pytest

from finetune.training.hardware import Hardware


@pytest.fixture
def fake_hopper(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: (9, 0))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "NVIDIA H100")


def test_auto_on_a_gpu_picks_bf16_tf32_fused_adamw_and_pinned_memory(fake_hopper):
    args = Hardware(device="auto", precision="auto", tf32=True).resolve()
    assert (args["use_cpu"], args["bf16"], args["fp16"], args["tf32"]) == (False, True, False, True)
    assert args["optim"] == "adamw_torch_fused" and args["dataloader_pin_memory"] is True


def test_each_gpu_lever_can_be_switched_off(fake_hopper):
    args = Hardware(device="auto", precision="fp32", tf32=False, fused_optimizer=False, pin_memory=False).resolve()
    assert (args["bf16"], args["dataloader_pin_memory"], args["optim"], "tf32" in args) == (
        False,
        False,
        "adamw_torch",
        False,
    )


def test_cpu_gets_fused_adamw_but_not_the_gpu_only_levers(fake_hopper):
    """Fused AdamW has a CPU kernel too; TF32 and pinned memory are CUDA's."""
    hardware = Hardware(device="cpu", precision="fp32")
    args = hardware.resolve()
    assert (
        args["use_cpu"]
        and not args["dataloader_pin_memory"]
        and args["optim"] == "adamw_torch_fused"
        and "tf32" not in args
    )
    assert (
        "fused AdamW: on, batch padding: to the longest row, fast dropout: on, torch.compile: off"
        in hardware.describe()
    )


@pytest.mark.parametrize(
    ("device", "torch_compile", "setting", "multiple"),
    [
        ("auto", False, None, 8),
        ("cpu", False, None, 1),
        ("cpu", True, None, 8),
        ("cpu", False, 16, 16),
        ("auto", False, 1, 1),
    ],
)
def test_batches_are_padded_to_multiples_of_8_with_a_gpu_or_torch_compile(
    fake_hopper, device, torch_compile, setting, multiple
):
    hardware = Hardware(device=device, precision="fp32", torch_compile=torch_compile, pad_to_multiple_of=setting)
    hardware.resolve()
    assert hardware.padding_multiple == hardware.summary()["pad_to_multiple_of"] == multiple


@pytest.mark.parametrize(
    ("device", "setting", "used"),
    [("auto", None, False), ("cpu", None, True), ("auto", True, True), ("cpu", False, False)],
)
def test_fast_dropout_is_on_for_cpu_training_unless_switched_off(fake_hopper, device, setting, used):
    hardware = Hardware(device=device, precision="fp32", fast_dropout=setting)
    hardware.resolve()
    assert hardware.integer_dropout == hardware.summary()["fast_dropout"] == used
