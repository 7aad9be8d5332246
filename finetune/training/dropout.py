"""Dropout with cheaper masks, for training on a CPU (``hardware.fast_dropout``).

PyTorch's CPU dropout draws each mask element as a float Bernoulli sample, and in attention it
falls back to SDPA's unfused path: on MiniLM the masks are ~14% of a bf16 training step
(``bench/train_speed.py --profile-steps 5``). Here a mask is 15-bit integers compared with
p x 2^15: a Bernoulli(1 - p) keep mask as torch's (p rounded to 2^-15), drawn from torch's
seeded generator (so a resumed run redraws the same masks), in less than half the time. Every
``nn.Dropout`` of the model is replaced, and models that take their attention from the
library's attention functions (BERT, RoBERTa, DistilBERT, ...) get an attention that applies
it to the attention probabilities. Without dropout (evaluation, inference) nothing changes:
the attention is SDPA's. Nothing of this is saved: ``model/`` loads as a plain model.
"""

import math

import torch
from torch import nn

MASK_BITS = 15
ATTENTION = "sdpa_integer_dropout"  # the attention implementation's registered name


def integer_mask_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x`` with each element zeroed with probability ``p`` and the rest scaled by 1 / (1 - p), as dropout does."""
    threshold = round(p * 2**MASK_BITS)
    if threshold >= 2**MASK_BITS:
        return torch.zeros_like(x)
    keep = torch.empty(x.shape, dtype=torch.int16, device=x.device).random_(0, 2**MASK_BITS) >= threshold
    # Each element scaled and rounded once, as torch's dropout does (a mask holding a bf16 scale is ~0.2% low).
    return torch.where(keep, x * (2**MASK_BITS / (2**MASK_BITS - threshold)), 0)


class IntegerMaskDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same modes) drawing its mask as integers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return integer_mask_dropout(x, self.p) if self.training and self.p > 0 else x


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None, **kwargs):
    """The library's SDPA attention, with the dropout on the attention probabilities done by
    ``integer_mask_dropout``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (
        dropout == 0.0 or is_causal or query.shape[1] != key.shape[1]
    ):  # evaluation, decoders, grouped heads: SDPA itself
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    scores = torch.matmul(query, key.transpose(2, 3)) * (
        scaling if scaling is not None else 1 / math.sqrt(query.shape[-1])
    )
    if attention_mask is not None:  # SDPA's: True where a token may be attended to (or an additive float mask)
        scores = (
            scores.masked_fill(~attention_mask, float("-inf"))
            if attention_mask.dtype == torch.bool
            else scores + attention_mask
        )
    probabilities = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    output = torch.matmul(integer_mask_dropout(probabilities, dropout), value)
    return output.transpose(1, 2).contiguous(), None


def use_integer_mask_dropout(model: nn.Module) -> int:
    """Replace every ``nn.Dropout`` of ``model`` and, where it uses SDPA, its attention.

    Returns how many dropouts were replaced.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    replaced = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, IntegerMaskDropout(child.p, child.inplace))
                replaced += 1
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
        AttentionInterface.register(ATTENTION, attention)
        AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks SDPA gets
        model.set_attn_implementation(ATTENTION)
    return replaced
