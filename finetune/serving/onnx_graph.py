"""The ONNX graph of a model folder: ``torch.onnx.export`` of its logits and text embeddings, and the int8 recipe."""

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

from finetune.errors import FinetuneError, one_line
from finetune.inference.predictor import Text
from finetune.inference.runners import EMBEDDING_OUTPUT
from finetune.tasks.formats import quieted

OPSET = 17  # LayerNormalization is one operator from 17 on, which ONNX Runtime's fusions match
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Int8Recipe:
    """How the int8 model is made: ONNX Runtime's dynamic quantization of the MatMul weights."""

    fuse: bool = (
        False  # fuse attention, LayerNorm and GELU first (onnxruntime.transformers.optimizer, BERT-family graphs)
    )
    per_channel: bool = True  # one scale per output column instead of one per matrix
    keep_head_fp32: bool = True  # leave the classification head (pooler, classifier) in fp32

    def describe(self) -> Dict[str, Any]:
        return {
            "method": "onnxruntime.quantization.quantize_dynamic (weights int8, activations quantized per batch)",
            "fused": self.fuse,
            "per_channel": self.per_channel,
            "head_in_fp32": self.keep_head_fp32,
        }


# Measured on a MiniLM AG News run (docs/benchmarks/inference.md, bench/int8_recipes.py): per-tensor
# scales cost 0.4 points of accuracy, per-channel ones none; with the Predictor's passes of a
# few texts the fused graph (one QAttention per layer) ran 10-20% slower than the plain one;
# static quantization was slower still and lost 0.9-1.5 points. The fp32 head costs nothing measurable.
DEFAULT_INT8 = Int8Recipe()


def export_onnx(model_dir: Path, tokenizer, sample: Sequence[Text], path: Path) -> None:
    """``torch.onnx.export`` of the model's logits and text embeddings (the mean of the last hidden layer over
    each text's tokens, as ``Predictor.embeddings`` computes them), with dynamic batch and sequence axes."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from finetune.inference.runners import mean_pooled

    # Eager attention: the plain MatMul-Softmax-MatMul graph ONNX Runtime's attention fusion recognises.
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    pairs = not isinstance(sample[0], str)
    encoded = tokenizer(*(zip(*sample) if pairs else [list(sample)]), padding=True, return_tensors="pt")
    names = [name for name in MODEL_INPUTS if name in encoded]

    class Outputs(torch.nn.Module):  # positional inputs in, logits and embeddings out: what the exporter traces
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            named = dict(zip(names, inputs))
            output = self.model(**named, output_hidden_states=True)
            mask = named.get("attention_mask", torch.ones_like(named["input_ids"]))
            return output.logits, mean_pooled(output.hidden_states[-1], mask)

    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False):
            warnings.simplefilter("ignore")  # the tracer's warnings about Python values it fixes: shapes stay dynamic
            torch.onnx.export(
                Outputs().eval(),
                tuple(encoded[n] for n in names),
                str(path),
                input_names=names,
                output_names=["logits", EMBEDDING_OUTPUT],
                dynamic_axes={**axes, "logits": {0: "batch"}, EMBEDDING_OUTPUT: {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as error:  # the exporter raises many types; what failed is in the message
        raise FinetuneError(
            f"Exporting the {model.config.model_type} model to ONNX failed: {one_line(str(error), 300)}"
        ) from error


def head_nodes(graph) -> List[str]:
    """The MatMul / Gemm nodes after the encoder's last LayerNorm: the pooler and the classifier."""
    producers = {output: node for node in graph.node for output in node.output}
    stack, seen, head = [graph.output[0].name], set(), []
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in seen or "LayerNormalization" in node.op_type:
            continue
        seen.add(node.name)
        if node.op_type in ("MatMul", "Gemm"):
            head.append(node.name)
        stack.extend(node.input)
    return head


def quantize_int8(fp32: Path, path: Path, config: Dict[str, Any], recipe: Int8Recipe = DEFAULT_INT8) -> None:
    """``fp32`` as dynamic int8 into ``path``, made as ``recipe`` says; ``config``: the model's config.json."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = fp32
    with quieted(
        None, logging.ERROR
    ):  # ONNX Runtime's tools warn through the root logger about steps that do not apply here
        if recipe.fuse:
            from onnxruntime.transformers.optimizer import optimize_model

            fused = fp32.with_name("fused.onnx")
            # Architectures without BERT's attention pattern (XLNet, DeBERTa) keep the fusions that do apply.
            heads = config.get("num_attention_heads") or config.get("n_heads") or 0
            hidden = config.get("hidden_size") or config.get("dim") or 0
            optimize_model(str(fp32), model_type="bert", num_heads=heads, hidden_size=hidden).save_model_to_file(
                str(fused)
            )
            source = fused
        excluded = head_nodes(onnx.load(str(source)).graph) if recipe.keep_head_fp32 else []
        # Fused operators live in ONNX Runtime's own domain, where ONNX's shape inference finds no types.
        quantize_dynamic(
            source,
            path,
            per_channel=recipe.per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
