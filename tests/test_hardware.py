"""The hardware group: what `auto` picks on a CUDA machine (faked here) and on this CPU."""

import pytest

from finetune.hardware import Hardware


@pytest.fixture
def fake_hopper(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: (9, 0))


def test_auto_on_a_gpu_picks_bf16_tf32_fused_adamw_and_pinned_memory(fake_hopper):
    args = Hardware(device="auto", precision="auto", tf32=True).resolve()
    assert (args["use_cpu"], args["bf16"], args["fp16"], args["tf32"]) == (False, True, False, True)
    assert args["optim"] == "adamw_torch_fused" and args["dataloader_pin_memory"] is True


def test_each_gpu_lever_can_be_switched_off(fake_hopper):
    args = Hardware(device="auto", precision="fp32", tf32=False, fused_optimizer=False, pin_memory=False).resolve()
    assert (args["bf16"], args["dataloader_pin_memory"], "optim" in args, "tf32" in args) == (False, False, False, False)


def test_cpu_gets_none_of_the_gpu_levers(fake_hopper):
    args = Hardware(device="cpu", precision="fp32").resolve()
    assert args["use_cpu"] and not args["dataloader_pin_memory"] and "optim" not in args and "tf32" not in args
