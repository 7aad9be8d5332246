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


@pytest.fixture
def native_bf16_cpu(monkeypatch):
    """A CPU that computes bf16 natively (AVX512-BF16, AMX), where auto picks bf16 autocast."""
    monkeypatch.setattr("finetune.devices.cpu_has_native_bf16", lambda: True)


def test_auto_keeps_deberta_in_fp32_where_half_precision_breaks_it(native_bf16_cpu, fake_hopper):
    from finetune.devices import resolve_precision
    from finetune.errors import FinetuneError

    for device in ("cpu", "cuda"):
        assert resolve_precision("auto", device, "hardware.precision", "bert") == "bf16"
        assert resolve_precision("auto", device, "hardware.precision", "deberta") == "fp32"
    assert Hardware(device="cpu", precision="auto").resolve("bert")["bf16"] is True
    assert Hardware(device="cpu", precision="auto").resolve("deberta")["bf16"] is False
    with pytest.raises(FinetuneError, match=r"^hardware.precision=bf16: deberta models fail.*use fp32"):
        Hardware(device="cpu", precision="bf16").resolve("deberta")


def test_a_deberta_in_half_precision_is_refused_before_training_however_it_got_there(native_bf16_cpu, tiny_models):
    """auto chose bf16 before config.json was at hand (a hub id not yet downloaded), or trainer.bf16 set by hand."""
    from types import SimpleNamespace

    from transformers import AutoModelForSequenceClassification

    from finetune.errors import FinetuneError

    model = AutoModelForSequenceClassification.from_pretrained(tiny_models["deberta"])
    hardware = Hardware(device="cpu", precision="auto")
    args = SimpleNamespace(**hardware.resolve(None))  # the type not known: bf16
    with pytest.raises(FinetuneError, match=r"precision=auto chose bf16 before the model's config.json.*fp32"):
        hardware.check_model(model, args)
    fp32 = Hardware(device="cpu", precision="fp32")
    args = SimpleNamespace(**fp32.resolve("deberta"))
    fp32.check_model(model, args)  # fp32: nothing to say
    with pytest.raises(
        FinetuneError, match=r"^trainer.bf16=true: deberta models fail in half precision.*leave it unset"
    ):
        fp32.check_model(model, SimpleNamespace(**{**vars(args), "bf16": True}))


def test_every_architecture_predicts_in_the_precision_auto_picks_on_a_native_bf16_cpu(native_bf16_cpu, tiny_models):
    """bf16 autocast where the CPU computes it (DeBERTa, which fails in it, in fp32): finite logits from each."""
    import numpy as np

    from finetune import Predictor

    picked = {}
    for architecture, folder in tiny_models.items():
        predictor = Predictor.load(folder, device="cpu")
        picked[architecture] = predictor.precision
        assert np.isfinite(predictor.logits(["robot chip", "the a on goal"])).all(), architecture
    assert picked == {name: "fp32" if name == "deberta" else "bf16" for name in tiny_models}
