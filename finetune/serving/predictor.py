"""``Predictor``: classify text with a trained run, a model folder, or its ONNX export.

Texts are tokenized once, sorted by length and batched, so each batch pads only to its own
longest text; on a CPU a batch also holds at most ``CPU_BATCH_TOKENS`` padded tokens. The model
runs under ``torch.inference_mode``, with half-precision autocast on a GPU and bf16 autocast on
CPUs that compute bf16 natively, or, with the ONNX backend, in ONNX Runtime without importing
PyTorch. Results come back in input order.
"""

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from finetune.errors import FinetuneError
from finetune.serving.abstention import abstaining_output, check_min_confidence
from finetune.tasks.kind import TaskKind
from finetune.tasks.kinds import kind_for_model
from finetune.tasks.windows import STRATEGIES, LongText, Windowing, encode_windows

Text = Union[str, Tuple[str, str]]  # a text, or a (first, second) pair
Output = Any  # what the task's kind returns for one text: ranked labels, labels above thresholds, or {"score": x}
EXPORT_INFO = "export.json"  # marks an export folder (python -m finetune.export): what it holds and how it was checked
EXPORT_DIR = "export"  # a run's default export folder
BACKENDS = ("torch", "onnx")
WINDOWED_TEXTS = 500  # texts read as windows (head_tail, chunks) are scored this many at a time
# Padded tokens per batch on a CPU (bench/batch_tokens.py, docs/inference.md; MiniLM on AG News):
# int8 ONNX ran 5-12% faster at 1,024 tokens (about 18 texts) than in passes of 64 texts, PyTorch
# as fast; and the budget bounds the memory a pass takes on long texts (64 x 512 tokens would not).
CPU_BATCH_TOKENS = 1024


@dataclass
class RunInfo:
    """What a run folder says about its task; defaults for a plain model folder."""

    model_dir: Path
    text_fields: List[str] = field(default_factory=lambda: ["text"])
    label_field: str = "label"
    max_length: Optional[int] = None  # the length the model was trained with
    metrics: List[str] = field(default_factory=list)  # the task's metrics; empty: the kind's defaults
    label_separator: str = ","
    column_names: Optional[List[str]] = None  # how the task's files were read
    quoted: bool = False
    rename_columns: Dict[str, str] = field(default_factory=dict)
    long_text: Dict[str, Any] = field(
        default_factory=dict
    )  # task.long_text: how the run read long texts; empty: truncate
    export_dir: Optional[Path] = None  # the ONNX export: the folder itself, or the run's export/

    def task_settings(self) -> Dict[str, Any]:
        """How the task reads and scores its files, as an export folder records it."""
        return {k: v for k, v in asdict(self).items() if k not in ("model_dir", "export_dir")}


def locate(path: Union[str, Path]) -> RunInfo:
    """Accept a run folder (uses its model/ and saved config), a model folder, or an export folder."""
    from omegaconf import OmegaConf

    path = Path(path).expanduser()
    if not path.is_dir():
        raise FinetuneError(f"No such folder: {path}")
    if (path / EXPORT_INFO).is_file():  # an export folder carries the task settings of the run it came from
        saved = json.loads((path / EXPORT_INFO).read_text(encoding="utf-8"))
        return RunInfo(path, export_dir=path, **saved["task"])
    model_dir = path / "model" if (path / "model" / "config.json").is_file() else path
    if not (model_dir / "config.json").is_file():
        raise FinetuneError(
            f"{path} holds no model: expected a run folder with model/, or a folder with config.json and weights."
        )
    info = RunInfo(model_dir)
    saved = path / ".hydra" / "config.yaml"
    if model_dir != path and saved.is_file():
        task = OmegaConf.load(saved).task
        info.text_fields, info.label_field, info.max_length = list(task.text_fields), task.label_field, task.max_length
        info.metrics, info.label_separator = list(task.get("metrics") or []), task.get("label_separator", ",")
        info.column_names, info.quoted = task.get("column_names"), task.get("quoted", False)
        info.rename_columns = dict(task.get("rename_columns") or {})
        info.long_text = LongText.of(task.get("long_text")).as_dict()
    if (path / EXPORT_DIR / EXPORT_INFO).is_file():
        info.export_dir = path / EXPORT_DIR
    return info


def require_onnx() -> None:
    """Stop with the install command when the optional ONNX packages are missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise FinetuneError(f"ONNX export and serving need {' and '.join(missing)}: pip install 'finetune[onnx]'")


def default_threads() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class TorchModel:
    """A PyTorch model as the Predictor runs it: padded batches in, logits (numpy) out."""

    backend, tensors = "torch", "pt"
    token_type_ids = None  # the model's own tokenizer knows whether the model takes them
    # Lengths rounded up to a multiple of 8: the CPU's bf16 kernels are built and cached per
    # shape, and one per exact length made memory creep up over a long file.
    pad_multiple = 8

    def __init__(self, model, precision: str = "auto"):
        import torch

        from finetune.devices import resolve_precision

        self.model = model.eval()
        self.config, self.folder = model.config.to_dict(), None
        self.num_labels = model.config.num_labels
        self.precision = resolve_precision(precision, model.device.type, "--precision")
        # Autocast runs the matrix products in half precision and leaves the weights as they
        # are, so a model shared with a Trainer (or saved later) is not changed.
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.threads = torch.get_num_threads()
        # A CPU pass holds at most CPU_BATCH_TOKENS; a GPU takes batch_size rows whatever their length.
        self.max_batch_tokens = CPU_BATCH_TOKENS if model.device.type == "cpu" else None

    def describe(self) -> str:
        device = self.model.device.type
        return f"PyTorch on {device.upper()}, {self.precision}" + (
            f", {self.threads} threads" if device == "cpu" else ""
        )

    def __call__(self, batch: Dict[str, Any]):
        import torch

        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        autocast = torch.autocast(
            self.model.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        )
        with torch.inference_mode(), autocast:
            return self.model(**batch).logits.float().cpu().numpy()


class OnnxModel:
    """An exported model (``model.onnx``) in ONNX Runtime on the CPU; imports no PyTorch."""

    backend, tensors = "onnx", "np"
    pad_multiple = None  # ONNX Runtime's kernels take any length: pad to the batch's longest text, no further

    def __init__(self, export_dir: Path, threads: Optional[int] = None):
        require_onnx()
        import onnxruntime

        self.export_dir = export_dir
        self.info = json.loads((export_dir / EXPORT_INFO).read_text(encoding="utf-8"))
        self.precision = self.info["precision"]
        self.config, self.folder = json.loads((export_dir / "config.json").read_text(encoding="utf-8")), export_dir
        self.threads = threads or default_threads()
        self.max_batch_tokens = CPU_BATCH_TOKENS
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1  # one graph at a time: its operators run in sequence
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        self.session = onnxruntime.InferenceSession(
            str(export_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]  # the exporter drops inputs a model ignores
        self.num_labels = self.session.get_outputs()[0].shape[1]
        # BERT's segment ids for pairs: asked of the tokenizer only where the model takes them, as the
        # generic tokenizer an export is read with does not know the model's input names.
        self.token_type_ids = "token_type_ids" in self.inputs

    def describe(self) -> str:
        return f"ONNX Runtime on CPU, {self.precision} ({self.export_dir / 'model.onnx'}), {self.threads} threads"

    def __call__(self, batch: Dict[str, Any]):
        return self.session.run(None, {name: batch[name].astype("int64") for name in self.inputs})[0]


def saved_kind(info: RunInfo) -> TaskKind:
    """The task kind of the model in ``info.model_dir``, read without loading the model."""
    config = json.loads((info.model_dir / "config.json").read_text(encoding="utf-8"))
    return kind_for_model(config, info.model_dir, info.metrics, info.label_separator)


class Predictor:
    """A fine-tuned model: call it on a text, a (first, second) pair, or a list of either.

    What it returns per text is the task kind's: labels ranked by probability (single-label),
    the labels above their thresholds (multi-label), or ``{"score": x}`` (regression).
    """

    def __init__(
        self,
        model,
        tokenizer,
        kind: Optional[TaskKind] = None,
        batch_size: int = 64,
        max_length: Optional[int] = None,
        precision: str = "auto",
        long_text: Any = None,
        min_confidence: Optional[float] = None,
        max_batch_tokens: Optional[int] = None,
    ):
        """``model``: a PyTorch model, or an ``OnnxModel`` (whose precision was fixed when it was exported).
        ``batch_size`` texts at most per forward pass, and ``max_batch_tokens`` padded tokens at most
        (default: the backend's CPU budget, none on a GPU; a longer text still goes alone).
        ``long_text``: how texts longer than ``max_length`` are read (``task.long_text``; default: truncated).
        ``min_confidence``: texts the model is less sure of are answered ``{"label": "(abstained)", ...}``."""
        self.runner = model if isinstance(model, OnnxModel) else TorchModel(model, precision)
        self.model, self.tokenizer, self.batch_size, self.max_batch_tokens = (
            model,
            tokenizer,
            batch_size,
            max_batch_tokens,
        )
        self.kind = kind or kind_for_model(self.runner.config, self.runner.folder)
        self.max_length = max_length or min(tokenizer.model_max_length, 512)
        self.labels = self.kind.label_names
        self.long_text = LongText.of(long_text)
        check_min_confidence(self.kind, min_confidence)
        self.min_confidence = min_confidence
        self.precision, self.threads, self.backend = self.runner.precision, self.runner.threads, self.runner.backend

    def describe(self) -> str:
        """Where and how the model runs: backend, device, precision, threads."""
        return self.runner.describe()

    @classmethod
    def load(
        cls,
        path: Union[str, Path],
        device: Optional[str] = None,
        backend: Optional[str] = None,
        threads: Optional[int] = None,
        **options: Any,
    ) -> "Predictor":
        """Load from a run folder, a model folder or an export folder; ``device`` defaults to CUDA, else Apple silicon's MPS, else the CPU.

        ``backend``: ``torch`` (the default for a run or model folder) or ``onnx`` (the default for
        an export folder; a run folder uses its ``export/``). ``threads``: intra-op threads
        (default: the CPUs this process may use for ONNX, PyTorch's own choice for torch).
        """
        info = locate(path)
        backend = backend or ("onnx" if info.export_dir == info.model_dir else "torch")
        if backend not in BACKENDS:
            raise FinetuneError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}.")
        kind = saved_kind(info)
        options["max_length"] = options.get("max_length") or info.max_length
        options["long_text"] = long_text_for(info, options.get("long_text"))
        if backend == "onnx":
            predictor = cls(*_load_export(info, path, device, threads, options), kind=kind, **options)
        else:
            predictor = cls(*_load_torch(info, path, device, threads), kind=kind, **options)
        predictor.info = info
        return predictor

    def __call__(self, texts: Union[Text, Sequence[Text]], top_k: Optional[int] = None) -> Union[Output, List[Output]]:
        """The kind's output for one input, or a list of them for a list of inputs."""
        single = isinstance(texts, (str, tuple))
        scores = self.scores([texts] if single else list(texts))
        results = [abstaining_output(self.kind, row, self.min_confidence, top_k) for row in scores]
        return results[0] if single else results

    def scores(self, texts: Sequence[Text], progress: bool = False):
        """Probabilities per class (or the predicted value), one row per input, in input order."""
        return self.kind.scores(self.logits(texts, progress))

    def logits(self, texts: Sequence[Text], progress: Any = False):
        """The model's raw outputs, one row per input, in input order (a numpy array).

        ``progress``: True shows a bar of batches; a tqdm bar given here is advanced by rows.
        """
        import numpy as np
        from tqdm.auto import tqdm

        width = self.runner.num_labels
        if not texts:
            return np.zeros((0, width), dtype=np.float32)
        columns = self._columns(texts)
        if self.long_text.windowed and len(texts) > WINDOWED_TEXTS:  # a group at a time: the progress bar moves
            return np.concatenate(
                [self.logits(texts[i : i + WINDOWED_TEXTS], progress) for i in range(0, len(texts), WINDOWED_TEXTS)]
            )
        documents = None
        if self.long_text.windowed:  # rows are windows from here on, aggregated per text at the end
            windowing = Windowing(self.long_text, self.max_length)
            encoded, documents = encode_windows(
                self.tokenizer, columns, windowing, return_token_type_ids=self.runner.token_type_ids
            )
            self.windows_scored += len(documents)
        else:
            encoded = self.tokenizer(
                *columns, truncation=True, max_length=self.max_length, return_token_type_ids=self.runner.token_type_ids
            )
        batches = self._batches(encoded)
        result = np.empty((len(encoded["input_ids"]), width), dtype=np.float32)
        outer = None if isinstance(progress, bool) else progress
        for rows in tqdm(batches, desc="Predicting", unit="batch", disable=progress is not True):
            result[rows] = self._forward(encoded, rows)
            if outer is not None and documents is None:
                outer.update(len(rows))
        if documents is None:
            return result
        if outer is not None:  # the bar counts texts, not windows
            outer.update(len(texts))
        return self.kind.aggregate(result, documents, self.long_text.aggregation)

    @property
    def tokens_per_pass(self) -> Optional[int]:
        """Padded tokens a forward pass holds at most: ``max_batch_tokens``, else the backend's budget (None: no cap)."""
        return self.max_batch_tokens or self.runner.max_batch_tokens

    def passes(self, texts: Sequence[Text]) -> Iterator[Tuple[Any, Any]]:
        """The kind's scores of ``texts`` a forward pass at a time, shortest texts first: (their
        positions in ``texts``, their scores). What a server answers from as each pass ends; texts
        read as windows (``long_text`` head_tail or chunks) come all at once."""
        import numpy as np

        if self.long_text.windowed or not texts:
            yield np.arange(len(texts)), self.scores(texts)
            return
        encoded = self.tokenizer(
            *self._columns(texts),
            truncation=True,
            max_length=self.max_length,
            return_token_type_ids=self.runner.token_type_ids,
        )
        for rows in self._batches(encoded):
            yield rows, self.kind.scores(self._forward(encoded, rows))

    def _columns(self, texts: Sequence[Text]) -> List[List[str]]:
        pairs = [t for t in texts if not isinstance(t, str)]
        if pairs and len(pairs) != len(texts):
            raise FinetuneError("Mix of single texts and pairs in one call: classify them separately.")
        return [list(column) for column in zip(*texts)] if pairs else [list(texts)]

    def _batches(self, encoded: Dict[str, Any]) -> List[Any]:
        lengths = [len(ids) for ids in encoded["input_ids"]]
        self.tokens_scored += sum(lengths)
        return length_batches(lengths, self.batch_size, self.tokens_per_pass, self.runner.pad_multiple)

    def _forward(self, encoded: Dict[str, Any], rows: Any):
        """The logits of the encoded rows ``rows``, padded together as one batch."""
        batch = self.tokenizer.pad(
            [{k: encoded[k][i] for k in encoded} for i in rows],
            return_tensors=self.runner.tensors,
            pad_to_multiple_of=self.runner.pad_multiple,
        )
        return self.runner(batch)

    windows_scored = tokens_scored = (
        0  # what the calls so far computed: windows (long_text head_tail or chunks) and tokens
    )


def long_text_for(info: RunInfo, override: Any = None) -> LongText:
    """How a run read long texts (its saved ``task.long_text``), or ``override``: settings, or a strategy's name
    (the run's other settings kept)."""
    if override is None:
        return LongText.of(info.long_text or None)
    if isinstance(override, str):
        if override not in STRATEGIES:
            raise FinetuneError(f"--long-text {override!r}: choose one of {', '.join(STRATEGIES)}.")
        return LongText.of({**(info.long_text or {}), "strategy": override})
    return LongText.of(override)


def length_batches(
    lengths: Sequence[int], max_rows: int, max_tokens: Optional[int], multiple: Optional[int]
) -> List[Any]:
    """Row indices in batches of neighbours by length, shortest first: each batch holds ``max_rows``
    rows at most and, padded to its longest row (rounded up to ``multiple``), ``max_tokens`` at most."""
    import numpy as np

    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < max_rows:
            longest = lengths[order[end]]
            padded = -(-longest // multiple) * multiple if multiple else longest
            if max_tokens and (end - start + 1) * padded > max_tokens:
                break
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def _load_torch(info: RunInfo, path: Union[str, Path], device: Optional[str], threads: Optional[int]):
    """The PyTorch model and tokenizer of a run or model folder."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if info.export_dir == info.model_dir:
        raise FinetuneError(
            f"{path} holds an ONNX export, not a PyTorch model: use --backend onnx (backend='onnx'), or give the run folder."
        )
    if threads:
        torch.set_num_threads(threads)
    from finetune.devices import choose_device

    device = choose_device(device or "auto", "--device")
    try:
        tokenizer = AutoTokenizer.from_pretrained(info.model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(info.model_dir).to(device)
    except (OSError, ValueError) as error:
        raise FinetuneError(f"Could not load the model in {info.model_dir}: {error}") from error
    return model, tokenizer


def _load_export(
    info: RunInfo, path: Union[str, Path], device: Optional[str], threads: Optional[int], options: Dict[str, Any]
):
    """The ONNX model and tokenizer of an export folder (or a run's export/), without PyTorch."""
    # The generic fast tokenizer reads tokenizer.json as the model's own class wrote it, and
    # unlike AutoTokenizer it does not import PyTorch.
    from transformers import PreTrainedTokenizerFast

    if info.export_dir is None:
        raise FinetuneError(
            f"{path} has no ONNX export ({EXPORT_DIR}/{EXPORT_INFO}): create one with python -m finetune.export {path}"
        )
    if device not in (None, "cpu"):
        raise FinetuneError(
            f"--device {device}: the ONNX backend runs on the CPU; drop --device, or use --backend torch."
        )
    if options.pop("precision", "auto") not in ("auto", None):
        raise FinetuneError(
            "--precision applies to --backend torch; an ONNX export's precision is chosen when exporting (--quantize int8)."
        )
    model = OnnxModel(info.export_dir, threads)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(info.export_dir)
    tokenizer.padding_side = model.info["padding_side"]  # XLNet pads on the left; the generic class does not know
    return model, tokenizer


def rounded(value: Any) -> Any:
    """Scores to 3 decimals, for printing."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value
