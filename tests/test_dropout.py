"""Dropout with integer masks (hardware.fast_dropout): dropout's statistics, and a model that computes
what the library's computes wherever no dropout is drawn."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from finetune.training.dropout import (
    ATTENTION,
    IntegerMaskDropout,
    attention,
    integer_mask_dropout,
    use_integer_mask_dropout,
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_integer_masks_drop_p_of_the_elements_and_keep_the_mean(dtype):
    x = (torch.rand(1_000_000) + 0.5).to(dtype).requires_grad_()
    torch.manual_seed(0)
    y = integer_mask_dropout(x, 0.1)
    kept = y.detach() != 0
    scale = 2**15 / (2**15 - round(0.1 * 2**15))
    assert abs(1 - float(kept.float().mean()) - 0.1) < 0.002  # 6 standard deviations
    y.sum().backward()  # the gradient: the scale where kept, nothing elsewhere
    assert torch.equal(x.grad, torch.where(kept, torch.tensor(scale, dtype=dtype), torch.tensor(0, dtype=dtype)))
    y = y.detach()
    assert float(y.float().sum() / x.detach().float().sum()) == pytest.approx(1.0, abs=0.005)
    # Each kept element times 1 / (1 - p) (p to 2^-15) in fp32, rounded once to x's type, as torch's dropout does.
    assert torch.equal(y[kept], (x.detach()[kept].float() * torch.tensor(scale)).to(dtype))
    assert torch.equal(integer_mask_dropout(x, 1.0), torch.zeros_like(x))


def test_the_same_generator_state_draws_the_same_mask():
    x = torch.ones(10_000)
    torch.manual_seed(3)
    first = integer_mask_dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(first, integer_mask_dropout(x, 0.3))


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "roberta", "xlnet", "deberta"])
def test_a_model_with_integer_masks_computes_what_it_did_without_dropout_and_saves_as_a_plain_model(
    tiny_models, model_type, tmp_path
):
    reference = AutoModelForSequenceClassification.from_pretrained(tiny_models[model_type]).eval()
    model = AutoModelForSequenceClassification.from_pretrained(tiny_models[model_type])
    dropouts = sum(type(m) is torch.nn.Dropout for m in model.modules())
    assert use_integer_mask_dropout(model) == dropouts > 0
    assert not any(type(m) is torch.nn.Dropout for m in model.modules()) and any(
        isinstance(m, IntegerMaskDropout) for m in model.modules()
    )
    inputs = {
        "input_ids": torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
    }
    if model_type == "xlnet":  # pads on the left
        inputs = {
            "input_ids": torch.tensor([[2, 5, 6, 7, 3], [0, 0, 2, 8, 3]]),
            "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]),
        }
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, reference(**inputs).logits, atol=1e-6)
    model.train()
    with torch.no_grad():  # dropout drawn: training outputs differ from evaluation's
        assert not torch.allclose(model(**inputs).logits, reference(**inputs).logits, atol=1e-6)
    model.save_pretrained(tmp_path)
    assert ATTENTION not in (tmp_path / "config.json").read_text()
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path).config._attn_implementation != ATTENTION


def test_the_attention_masks_padding_as_sdpa_does():
    """With a dropout that drops nothing, the attention's own path equals SDPA's, padding masked."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 4, 6, 8) for _ in range(3))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    mask[1, :, :, 4:] = False  # the second row's last two tokens are padding
    module = torch.nn.Module()
    module.is_causal = False
    ours, _ = attention(module, query, key, value, mask, dropout=1e-9, scaling=0.3)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, dropout=0.0, scaling=0.3)
    assert torch.allclose(ours, theirs, atol=1e-5)
