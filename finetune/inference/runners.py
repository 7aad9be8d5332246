"""The models a ``Predictor`` runs: a PyTorch model (``TorchModel``) or an ONNX export (``OnnxModel``), each taking
padded batches and giving logits or text embeddings as numpy arrays; and the checks that choose between them."""

import os
from typing import Any, Dict, Optional

from finetune.errors import FinetuneError
from finetune.packages import DISTRIBUTION
from finetune.runs.model_folder import ModelFolder

BACKENDS = ("torch", "onnx")
# Padded tokens per batch on a CPU (bench/batch_tokens.py, docs/benchmarks/inference.md; MiniLM on AG News):
# int8 ONNX ran 5-12% faster at 1,024 tokens (about 18 texts) than in passes of 64 texts, PyTorch
# as fast; and the budget bounds the memory a pass takes on long texts (64 x 512 tokens would not).
CPU_BATCH_TOKENS = 1024
EMBEDDING_OUTPUT = "embedding"  # the export's second output: the mean of the last hidden layer over the text's tokens


def require_onnx() -> None:
    """Stop with the install command when the optional ONNX packages are missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise FinetuneError(f"ONNX export and serving need {' and '.join(missing)}: pip install '{DISTRIBUTION}[onnx]'")


def choose_backend(
    folder: ModelFolder, backend: Optional[str], device: Optional[str] = None, precision: Optional[str] = "auto"
) -> str:
    """The backend to run ``folder`` with (default: onnx for an export folder, else torch), once every check that
    needs no model has passed: the backend's name, an export to run, ONNX's packages, device and precision."""
    backend = backend or ("onnx" if folder.is_export else "torch")
    if backend not in BACKENDS:
        raise FinetuneError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}.")
    if backend == "torch":
        if folder.is_export:
            raise FinetuneError(
                f"{folder.path} holds an ONNX export, not a PyTorch model: use --backend onnx (backend='onnx'), "
                "or give the run folder."
            )
        return backend
    if folder.export_dir is None:
        raise folder.no_export()
    require_onnx()
    if device not in (None, "cpu"):
        raise FinetuneError(
            f"--device {device}: the ONNX backend runs on the CPU; drop --device, or use --backend torch."
        )
    if precision not in ("auto", None):
        raise FinetuneError(
            "--precision applies to --backend torch; "
            "an ONNX export's precision is chosen when exporting (--quantize int8)."
        )
    return backend


def default_threads() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def mean_pooled(hidden, mask):
    """The mean of ``hidden`` (batch, tokens, width) over each row's real tokens (``mask``)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


class TorchModel:
    """A PyTorch model as the Predictor runs it: padded batches in, logits or embeddings (numpy) out."""

    backend, tensors = "torch", "pt"
    token_type_ids = None  # the model's own tokenizer knows whether the model takes them
    # Lengths rounded up to a multiple of 8: the CPU's bf16 kernels are built and cached per
    # shape, and one per exact length made memory creep up over a long file.
    pad_multiple = 8

    def __init__(self, model, precision: str = "auto"):
        import torch

        from finetune.devices import resolve_precision

        self.model = model.eval()
        self.config = model.config.to_dict()
        self.num_labels = model.config.num_labels
        self.precision = resolve_precision(precision, model.device.type, "--precision", model.config.model_type)
        # Autocast runs the matrix products in half precision and leaves the weights as they
        # are, so a model shared with a Trainer (or saved later) is not changed.
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.threads = torch.get_num_threads()
        # A CPU pass holds at most CPU_BATCH_TOKENS; a GPU takes batch_size rows whatever their length.
        self.max_batch_tokens = CPU_BATCH_TOKENS if model.device.type == "cpu" else None

    def describe(self) -> str:
        device = self.model.device.type
        threads = f", {self.threads} threads" if device == "cpu" else ""
        return f"PyTorch on {device.upper()}, {self.precision}{threads}"

    def __call__(self, batch: Dict[str, Any], embeddings: bool = False):
        """The batch's logits, or with ``embeddings`` the mean of the last hidden layer over each text's tokens."""
        import torch

        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        device = self.model.device.type
        autocast = torch.autocast(device, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)
        with torch.inference_mode(), autocast:
            output = self.model(**batch, output_hidden_states=embeddings)
            if not embeddings:
                return output.logits.float().cpu().numpy()
            return mean_pooled(output.hidden_states[-1].float(), batch["attention_mask"]).cpu().numpy()


class OnnxModel:
    """An exported model (``model.onnx``) in ONNX Runtime on the CPU; imports no PyTorch."""

    backend, tensors = "onnx", "np"
    pad_multiple = None  # ONNX Runtime's kernels take any length: pad to the batch's longest text, no further

    def __init__(self, folder: ModelFolder, threads: Optional[int] = None):
        require_onnx()
        import onnxruntime

        self.onnx_file = folder.onnx_file
        self.info = folder.export_info()
        self.precision = self.info["precision"]
        self.config = folder.model_config()
        self.threads = threads or default_threads()
        self.max_batch_tokens = CPU_BATCH_TOKENS
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1  # one graph at a time: its operators run in sequence
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        self.session = onnxruntime.InferenceSession(str(self.onnx_file), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]  # the exporter drops inputs a model ignores
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.num_labels = self.session.get_outputs()[0].shape[1]
        # BERT's segment ids for pairs: asked of the tokenizer only where the model takes them, as the
        # generic tokenizer an export is read with does not know the model's input names.
        self.token_type_ids = "token_type_ids" in self.inputs

    def describe(self) -> str:
        return f"ONNX Runtime on CPU, {self.precision} ({self.onnx_file}), {self.threads} threads"

    def __call__(self, batch: Dict[str, Any], embeddings: bool = False):
        if embeddings and EMBEDDING_OUTPUT not in self.outputs:
            raise FinetuneError(
                f"{self.onnx_file} was exported without text embeddings; "
                "export the run again (python -m finetune.export RUN --overwrite) to get them, or use --backend torch."
            )
        wanted = [EMBEDDING_OUTPUT if embeddings else self.outputs[0]]
        return self.session.run(wanted, {name: batch[name].astype("int64") for name in self.inputs})[0]
