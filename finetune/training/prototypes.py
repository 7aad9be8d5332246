"""The few-label head (``model.head=prototypes``, the default under ``schedule.FEW_LABELS`` training rows).

Fine-tuning a fresh, random head on a few dozen rows mostly learns the head; two changes let the body's
pretraining carry the few labels instead:

1. **Mean pooling, folded in.** A sentence-transformers body (all-MiniLM-L6-v2, all-mpnet-base-v2, ...) was
   trained to mean its tokens' vectors, while ``BertForSequenceClassification`` reads the first token.
   One more encoder layer makes the first token's output the mean: its queries are zero, so every token
   attends to all tokens alike; its values pass the vectors through, scaled up so that the residual (the
   first token's own vector) vanishes under the layer norm; its feed-forward part is zero. The pooler
   then passes that vector on. The model stays a standard transformers class with one layer more (its
   ``config.json`` says so): ``pipeline()`` and ONNX export load it as they load any other.
2. **A head from class prototypes.** Each class's row of the last layer starts as the mean of its training
   rows' features (unit length, times ``SCALE``): before any step, the model answers with the nearest
   class mean, as a prototype network or SetFit's head on a frozen body would; training then moves body
   and head together.
"""

import copy
import json
import logging
from typing import Any, Optional

log = logging.getLogger(__name__)

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "label")
SCALE = 5.0  # prototype logits: cosine similarity times this (a temperature of 0.2)
RESIDUAL_SCALE = 1000.0  # the folded layer's values are scaled by this, so the residual is 0.1% of its output


def mean_pooled(pretrained: Any) -> bool:
    """Whether the checkpoint is a sentence-transformers body that means its tokens (modules.json, 1_Pooling)."""
    modules = pretrained.small_file("modules.json")
    if modules is None:
        return False
    try:
        steps = json.loads(modules.read_text(encoding="utf-8"))
        pooling = next(s for s in steps if str(s.get("type", "")).endswith("Pooling"))
        config = pretrained.small_file(f"{pooling['path']}/config.json")
        return bool(config and json.loads(config.read_text(encoding="utf-8")).get("pooling_mode_mean_tokens"))
    except (OSError, ValueError, StopIteration, KeyError, TypeError):
        return False


def _pooling_dense(model) -> Optional[Any]:
    """The dense layer that reads the first token's vector: BERT's pooler, or RoBERTa's head."""
    pooler = getattr(model.base_model, "pooler", None)
    if pooler is not None and hasattr(pooler, "dense"):
        return pooler.dense
    return getattr(getattr(model, "classifier", None), "dense", None)


def fold_mean_pooling(model) -> bool:
    """Append the layer that makes the first token's output the mean of all tokens (see the module doc).

    False, and the model unchanged, for an architecture without BERT's layer layout.
    """
    import torch

    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    dense = _pooling_dense(model)
    if not isinstance(layers, torch.nn.ModuleList) or dense is None or not hasattr(layers[-1], "attention"):
        return False
    layer = copy.deepcopy(layers[-1])
    width = model.config.hidden_size
    eye = torch.eye(width)
    attention, ffn_in, ffn_out = layer.attention, layer.intermediate.dense, layer.output.dense
    with torch.no_grad():
        for linear, weight in (
            (attention.self.query, torch.zeros(width, width)),
            (attention.self.value, eye),
            (attention.output.dense, eye * RESIDUAL_SCALE),
            (ffn_in, torch.zeros_like(ffn_in.weight)),
            (ffn_out, torch.zeros_like(ffn_out.weight)),
            (dense, eye),
        ):
            linear.weight.copy_(weight)
            linear.bias.zero_()
        for norm in (attention.output.LayerNorm, layer.output.LayerNorm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        layer.output.LayerNorm.weight.fill_(width**-0.5)  # unit length, as sentence-transformers normalizes
    layers.append(layer)
    model.config.num_hidden_layers = len(layers)
    return True


def token_mean(features, attention_mask):
    """The mean of each row's token features, padding left out.

    A head that scores every token and averages the scores (EuroBERT's ``classifier_pooling: late``) is linear
    in its last layer, so its logits are that layer on this mean: the row's features for the prototypes.
    """
    mask = attention_mask.to(features).unsqueeze(-1)
    return (features * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def init_from_prototypes(model, kind, train, collator, batch_size: int = 32) -> None:
    """Set the last layer's class rows to the unit-length means of the training rows' features (times SCALE)."""
    import torch

    head = kind.head(model)
    features, labels = [], []
    hook = head.register_forward_hook(lambda module, inputs, output: features.append(inputs[0].detach().float()))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            rows = train.select_columns([c for c in train.column_names if c in MODEL_INPUTS])
            for start in range(0, len(rows), batch_size):
                batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
                labels.append(batch.pop("labels"))
                model(**{k: v.to(model.device) for k, v in batch.items()})
                if features[-1].dim() == 3:  # a head on every token: its features are the tokens' mean
                    features[-1] = token_mean(features[-1], batch["attention_mask"])
    finally:
        hook.remove()
        model.train(was_training)
    raw = torch.cat(features)
    found = torch.nn.functional.normalize(raw, dim=1)
    labels = torch.cat(labels).to(found.device)
    length = raw.norm(dim=1).mean().clamp_min(1e-6)  # logits: SCALE times the cosine, at the features' usual length
    with torch.no_grad():
        for label in range(kind.num_labels):
            rows = found[labels == label]
            if len(rows):
                prototype = torch.nn.functional.normalize(rows.mean(0), dim=0)
                head.weight[label] = (SCALE / length * prototype).to(head.weight)
        head.bias.zero_()
