"""``Predictor``: classify text with a trained run, a model folder, or its ONNX export.

Texts are tokenized once, sorted by length and batched, so each batch pads only to its own
longest text; on a CPU a batch also holds at most ``CPU_BATCH_TOKENS`` padded tokens. The model
runs under ``torch.inference_mode``, with half-precision autocast on a GPU and bf16 autocast on
CPUs that compute bf16 natively, or, with the ONNX backend, in ONNX Runtime without importing
PyTorch. Results come back in input order.
"""

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from finetune.errors import FinetuneError
from finetune.inference.answers import Answers
from finetune.inference.runners import OnnxModel, TorchModel, choose_backend
from finetune.runs.model_folder import ModelFolder
from finetune.tasks.kind import TaskKind
from finetune.tasks.registry import kind_for_model
from finetune.tasks.windows import STRATEGIES, LongText, Windowing, encode_windows

Text = Union[str, Tuple[str, str]]  # a text, or a (first, second) pair
Output = Any  # what the task's kind returns for one text: ranked labels, labels above thresholds, or {"predicted": x}
WINDOWED_TEXTS = 500  # texts read as windows (head_tail, chunks) are scored this many at a time


class Predictor:
    """A fine-tuned model: call it on a text, a (first, second) pair, or a list of either.

    What it returns per text is its answer (finetune/inference/answers.py): labels ranked by
    probability (single-label), the labels above their thresholds (multi-label), or ``{"predicted": x}``
    (regression); below ``min_confidence``, an abstention (finetune/tasks/vocabulary.py names the fields).
    ``embeddings`` gives the texts' vectors.
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
        folder: Optional[ModelFolder] = None,
    ):
        """``model``: a PyTorch model, or an ``OnnxModel`` (whose precision was fixed when it was exported).
        ``batch_size`` texts at most per forward pass, and ``max_batch_tokens`` padded tokens at most
        (default: the backend's CPU budget, none on a GPU; a longer text still goes alone).
        ``long_text``: how texts longer than ``max_length`` are read (``task.long_text``; default: truncated).
        ``min_confidence``: texts the model is less sure of are answered ``{"predicted": "(abstained)", ...}``.
        ``folder``: the model folder it was loaded from (``Predictor.load``)."""
        self.runner = model if isinstance(model, OnnxModel) else TorchModel(model, precision)
        self.model, self.tokenizer, self.folder = model, tokenizer, folder
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.kind = kind or kind_for_model(self.runner.config)
        self.max_length = max_length or min(tokenizer.model_max_length, 512)
        self.labels = self.kind.label_names
        self.long_text = LongText.of(long_text)
        self.answers = Answers(self.kind, min_confidence)
        self.min_confidence = min_confidence
        self.precision, self.threads, self.backend = self.runner.precision, self.runner.threads, self.runner.backend
        # What the calls so far computed: forward passes and the rows they held, tokens, and windows
        # (long_text head_tail or chunks).
        self.forward_passes = self.rows_passed = self.tokens_scored = self.windows_scored = 0

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
        """Load from a run folder, a model folder or an export folder; ``device`` defaults to CUDA, else Apple
        silicon's MPS, else the CPU.

        ``backend``: ``torch`` (the default for a run or model folder) or ``onnx`` (the default for
        an export folder; a run folder uses its ``export/``). ``threads``: intra-op threads
        (default: the CPUs this process may use for ONNX, PyTorch's own choice for torch).
        """
        folder = ModelFolder.open(path)
        backend = choose_backend(folder, backend, device, options.get("precision", "auto"))
        options["max_length"] = options.get("max_length") or folder.record.max_length
        options["long_text"] = long_text_for(folder, options.get("long_text"))
        if backend == "onnx":
            options.pop("precision", None)
            model, tokenizer = _load_export(folder, threads)
        else:
            model, tokenizer = _load_torch(folder, device, threads)
        return cls(model, tokenizer, kind=folder.kind(), folder=folder, **options)

    def __call__(self, texts: Union[Text, Sequence[Text]], top_k: Optional[int] = None) -> Union[Output, List[Output]]:
        """The answer for one input, or a list of them for a list of inputs."""
        single = isinstance(texts, (str, tuple))
        results = self.answers.rows(self.scores([texts] if single else list(texts)), top_k)
        return results[0] if single else results

    def scores(self, texts: Sequence[Text], progress: bool = False):
        """Probabilities per class (or the predicted value), one row per input, in input order."""
        return self.kind.scores(self.logits(texts, progress))

    def logits(self, texts: Sequence[Text], progress: Any = False):
        """The model's raw outputs, one row per input, in input order (a numpy array).

        ``progress``: True shows a bar of batches; a tqdm bar given here is advanced by rows.
        """
        return self._outputs(texts, progress, embeddings=False)

    def embeddings(self, texts: Sequence[Text], progress: Any = False):
        """Each text's vector, one row per input, in input order: the mean of the model's last hidden layer
        over the text's tokens; a text read as windows (long_text head_tail or chunks) gets its windows' mean."""
        return self._outputs(texts, progress, embeddings=True)

    def _outputs(self, texts: Sequence[Text], progress: Any, embeddings: bool):
        import numpy as np
        from tqdm.auto import tqdm

        if not texts:
            width = self.runner.config.get("hidden_size", 0) if embeddings else self.runner.num_labels
            return np.zeros((0, width), dtype=np.float32)
        columns = self._columns(texts)
        if self.long_text.windowed and len(texts) > WINDOWED_TEXTS:  # a group at a time: the progress bar moves
            return np.concatenate(
                [
                    self._outputs(texts[i : i + WINDOWED_TEXTS], progress, embeddings)
                    for i in range(0, len(texts), WINDOWED_TEXTS)
                ]
            )
        documents = None
        if self.long_text.windowed:  # rows are windows from here on, aggregated per text at the end
            windowing = Windowing(self.long_text, self.max_length)
            encoded, documents = encode_windows(
                self.tokenizer, columns, windowing, return_token_type_ids=self.runner.token_type_ids
            )
            self.windows_scored += len(documents)
        else:
            encoded = self._encode(columns)
        result = None
        outer = None if isinstance(progress, bool) else progress
        for rows in tqdm(self._batches(encoded), desc="Predicting", unit="batch", disable=progress is not True):
            part = self._forward(encoded, rows, embeddings)
            if result is None:
                result = np.empty((len(encoded["input_ids"]), part.shape[1]), dtype=np.float32)
            result[rows] = part
            if outer is not None and documents is None:
                outer.update(len(rows))
        if documents is None:
            return result
        if outer is not None:  # the bar counts texts, not windows
            outer.update(len(texts))
        if embeddings:
            return _mean_by_document(result, documents)
        return self.kind.aggregate(result, documents, self.long_text.aggregation)

    @property
    def tokens_per_pass(self) -> Optional[int]:
        """Most padded tokens per forward pass: ``max_batch_tokens``, else the backend's budget (None: no cap)."""
        return self.max_batch_tokens or self.runner.max_batch_tokens

    def passes(self, texts: Sequence[Text]) -> Iterator[Tuple[Any, Any]]:
        """The kind's scores of ``texts`` a forward pass at a time, shortest texts first: (their
        positions in ``texts``, their scores). What a server answers from as each pass ends; texts
        read as windows (``long_text`` head_tail or chunks) come all at once."""
        import numpy as np

        if self.long_text.windowed or not texts:
            yield np.arange(len(texts)), self.scores(texts)
            return
        encoded = self._encode(self._columns(texts))
        for rows in self._batches(encoded):
            yield rows, self.kind.scores(self._forward(encoded, rows))

    def _encode(self, columns: List[List[str]]) -> Dict[str, Any]:
        return self.tokenizer(
            *columns, truncation=True, max_length=self.max_length, return_token_type_ids=self.runner.token_type_ids
        )

    def _columns(self, texts: Sequence[Text]) -> List[List[str]]:
        pairs = [t for t in texts if not isinstance(t, str)]
        if pairs and len(pairs) != len(texts):
            raise FinetuneError("Mix of single texts and pairs in one call: classify them separately.")
        return [list(column) for column in zip(*texts)] if pairs else [list(texts)]

    def _batches(self, encoded: Dict[str, Any]) -> List[Any]:
        lengths = [len(ids) for ids in encoded["input_ids"]]
        self.tokens_scored += sum(lengths)
        return length_batches(lengths, self.batch_size, self.tokens_per_pass, self.runner.pad_multiple)

    def _forward(self, encoded: Dict[str, Any], rows: Any, embeddings: bool = False):
        """The logits (or embeddings) of the encoded rows ``rows``, padded together as one batch."""
        batch = self.tokenizer.pad(
            [{k: encoded[k][i] for k in encoded} for i in rows],
            return_tensors=self.runner.tensors,
            pad_to_multiple_of=self.runner.pad_multiple,
        )
        self.forward_passes += 1
        self.rows_passed += len(rows)
        return self.runner(batch, embeddings=embeddings)


def _mean_by_document(rows, documents):
    """The mean of the rows of each document (``documents``: the document of each row, 0..n-1)."""
    import numpy as np

    documents = np.asarray(documents)
    count = int(documents.max()) + 1 if len(documents) else 0
    sums = np.zeros((count, rows.shape[1]), dtype=np.float64)
    np.add.at(sums, documents, rows)
    return (sums / np.bincount(documents, minlength=count)[:, None]).astype(np.float32)


def long_text_for(folder: ModelFolder, override: Any = None) -> LongText:
    """How a run read long texts (its record's ``long_text``), or ``override``: settings, or a strategy's name
    (the run's other settings kept)."""
    saved = folder.record.long_text or None
    if override is None:
        return LongText.of(saved)
    if isinstance(override, str):
        if override not in STRATEGIES:
            raise FinetuneError(f"--long-text {override!r}: choose one of {', '.join(STRATEGIES)}.")
        return LongText.of({**(saved or {}), "strategy": override})
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


def _load_torch(folder: ModelFolder, device: Optional[str], threads: Optional[int]):
    """The PyTorch model and tokenizer of a run or model folder."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    from finetune.devices import choose_device

    device = choose_device(device or "auto", "--device")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder.model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(folder.model_dir).to(device)
    except (OSError, ValueError) as error:
        raise FinetuneError(f"Could not load the model in {folder.model_dir}: {error}") from error
    return model, tokenizer


def _load_export(folder: ModelFolder, threads: Optional[int]):
    """The ONNX model and tokenizer of an export folder (or a run's export/), without PyTorch."""
    # The generic fast tokenizer reads tokenizer.json as the model's own class wrote it, and
    # unlike AutoTokenizer it does not import PyTorch.
    from transformers import PreTrainedTokenizerFast

    model = OnnxModel(folder, threads)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder.export_dir)
    tokenizer.padding_side = model.info["padding_side"]  # XLNet pads on the left; the generic class does not know
    return model, tokenizer
