"""The `model` group: the tokenizer and the sequence-classification model of a checkpoint."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from finetune.config.schemas import ModelFields
from finetune.errors import FinetuneError
from finetune.hub import hub_failure

log = logging.getLogger(__name__)

# Position ids of these architectures start after the padding id: their position table holds 2 rows more
# than they accept.
POSITIONS_AFTER_PADDING = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "roberta-prelayernorm")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def longer_context(train_lengths: Optional[Dict[str, Any]], max_length: int, tokenizer) -> Optional[str]:
    """Where many train rows are cut at ``task.max_length`` and the model reads more tokens: a line naming its
    limit and the ``task.max_length`` that reads nine train rows in ten whole (long-context encoders such as
    ModernBERT, EuroBERT and GTE read 8,192). None where few rows are cut or the model reads no more."""
    from finetune.tasks.windows import CUT_WARNING_SHARE

    limit = tokenizer.model_max_length
    if not train_lengths or train_lengths["share_over_max_length"] <= CUT_WARNING_SHARE:
        return None
    if not max_length < limit < 1_000_000:  # XLNet and others report ~1e30: no limit of their own
        return None
    p90 = int(train_lengths["p90_tokens"])
    if p90 > limit:
        reach = f"task.max_length={limit}, its most, reads more of each (their 90th percentile: {p90} tokens)"
    else:
        wanted = min(limit, -(-p90 // 64) * 64)  # the 90th percentile, rounded up to a multiple of 64
        reach = f"task.max_length={wanted} reads 90% of them whole"
    return (
        f"The model reads up to {limit:,} tokens and {train_lengths['share_over_max_length']:.0%} of the train rows "
        f"are longer than task.max_length={max_length}: {reach} (time and memory grow with it)."
    )


@dataclass
class PretrainedClassifier(ModelFields):
    """Loads ``name_or_path`` (hub id or local folder) with a fresh classification head."""

    @property
    def is_local(self) -> bool:
        return Path(self.name_or_path).expanduser().is_dir()

    def _load(self, loader, what: str, **kwargs):
        if self.trust_remote_code:
            log.warning(
                "model.trust_remote_code=true: code shipped with '%s' will run on this machine.", self.name_or_path
            )
        try:
            return loader(self.name_or_path, trust_remote_code=self.trust_remote_code, **kwargs)
        except OSError as error:  # transformers reports missing files and failed downloads as OSError
            if self.is_local:
                raise FinetuneError(
                    f"Could not load the {what} from the folder {self.name_or_path}: {error}"
                ) from error
            raise FinetuneError(hub_failure(what, self.name_or_path, error)) from error

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        tokenizer = self._load(AutoTokenizer.from_pretrained, "tokenizer")
        if tokenizer.pad_token is None:  # GPT-style tokenizers: batches still need padding
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        return tokenizer

    def check_folder(self) -> None:
        """A local model folder without weights (or a path that is no folder) fails now, not after tokenizing."""
        if not self.is_local and self.name_or_path.startswith(("/", ".", "~")):  # a path, not a hub id
            raise FinetuneError(f"model.name_or_path: no such folder: {self.name_or_path}")
        if self.is_local and not any((Path(self.name_or_path).expanduser() / f).exists() for f in WEIGHT_FILES):
            raise FinetuneError(
                f"The model folder {self.name_or_path} has no weights ({' or '.join(WEIGHT_FILES[::2])}); "
                "point model.name_or_path at a complete model folder."
            )

    def small_file(self, name: str) -> Optional[Path]:
        """One of the model's small files (config.json, tokenizer_config.json).

        In its folder, or in the Hub cache; None if not at hand.
        """
        if self.is_local:
            path = Path(self.name_or_path).expanduser() / name
            return path if path.is_file() else None
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.name_or_path, name)  # never downloads
        return Path(found) if isinstance(found, str) else None

    def _read(self, name: str) -> Dict[str, Any]:
        path = self.small_file(name)
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path else {}
        except (OSError, ValueError):  # unreadable: the loaders say what is wrong with it
            return {}

    @property
    def model_type(self) -> Optional[str]:
        """config.json's ``model_type`` where the file is at hand (the folder, the Hub cache), else None."""
        return self._read("config.json").get("model_type")

    def length_limit(self) -> Tuple[Optional[int], str]:
        """The most tokens the model accepts and which file says so: the tokenizer's ``model_max_length``, else
        the position table of config.json; ``(None, ...)`` where neither tells (XLNet, DeBERTa-v2: relative
        positions)."""
        limit = self._read("tokenizer_config.json").get("model_max_length")
        if isinstance(limit, int) and limit < 1_000_000:  # XLNet and others write ~1e30: no limit
            return limit, "tokenizer_config.json"
        config = self._read("config.json")
        positions = config.get("max_position_embeddings")
        if not isinstance(positions, int) or config.get("position_biased_input") is False:
            return None, ""
        return positions - (2 if config.get("model_type") in POSITIONS_AFTER_PADDING else 0), "config.json"

    def empty_model(self):
        """The architecture without its weights (on the meta device, no memory): what its layers are called.

        None where config.json is not at hand (a hub id not yet downloaded) or names code that only
        ``trust_remote_code`` would run: loading the model then tells.
        """
        config_file = self.small_file("config.json")
        if config_file is None or self.trust_remote_code:
            return None
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification

        try:
            with torch.device("meta"):
                return AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(config_file.parent))
        except Exception:  # an architecture transformers does not know: the model's loading reports it
            return None

    def load_model(self, head: Dict[str, Any], tokenizer):
        """The encoder with a fresh head as the task's kind describes it (num_labels, problem_type, labels)."""
        from transformers import AutoModelForSequenceClassification

        extra = {"attn_implementation": self.attn_implementation} if self.attn_implementation else {}
        model = self._load(
            AutoModelForSequenceClassification.from_pretrained,
            "model",
            ignore_mismatched_sizes=True,  # a checkpoint fine-tuned on other labels gets a fresh head
            **head,
            **extra,
        )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model

    def uses_prototypes(self, kind, rows: int) -> bool:
        """``model.head``: the few-label head where asked, or (auto) for classes under FEW_LABELS training rows."""
        from finetune.training.schedule import is_few_labels

        if self.head == "auto":
            return kind.prototype_head and is_few_labels(rows)
        if self.head == "prototypes" and not kind.prototype_head:
            raise FinetuneError(
                f"model.head=prototypes starts a head from class means: a {kind.name} task has none; "
                "set model.head=fresh (or auto)."
            )
        return self.head == "prototypes"

    def check_pairs(self, adapter) -> None:
        """``model.contrastive_pairs`` trains the whole body before the few-label head: refused with a fresh head,
        and under LoRA, which keeps the body as it was."""
        if self.contrastive_pairs and self.head == "fresh":
            raise FinetuneError(
                f"model.contrastive_pairs={self.contrastive_pairs} trains the body before the few-label head, but "
                "model.head=fresh: set model.head=prototypes (or auto), or model.contrastive_pairs=0."
            )
        if self.contrastive_pairs and not adapter.trains_every_weight:
            raise FinetuneError(
                f"model.contrastive_pairs={self.contrastive_pairs} trains the whole body before the head, but "
                "peft=lora keeps the body as it was: set model.contrastive_pairs=0, or peft=none."
            )

    def prototype_head(self, model, kind, train, tokenizer, args, resumed: bool = False) -> str:
        """The few-label head (finetune/training/prototypes.py) on ``model``, after ``model.contrastive_pairs``
        pairs of the contrastive stage (finetune/training/contrastive.py) under ``args``; what was done, in words.

        ``resumed``: a checkpoint's weights replace these, the stage's work included: it is not trained again.
        """
        from transformers import DataCollatorWithPadding

        from finetune.training.contrastive import contrastive_stage, described
        from finetune.training.prototypes import fold_mean_pooling, init_from_prototypes, mean_pooled

        folded = mean_pooled(self) and fold_mean_pooling(model)
        pad = DataCollatorWithPadding(tokenizer)
        pairs, stage = self.contrastive_pairs, ""
        if pairs:
            done = described(pairs) + " (in the checkpoint resumed)" if resumed else None
            stage = f"{done or contrastive_stage(model, kind, train, pad, args, pairs, folded)}, "
        init_from_prototypes(model, kind, train, pad)
        pooling = "mean pooling folded in as one more layer, " if folded else ""
        return f"the few-label head: {pooling}{stage}the head started from the {len(train)} training rows' class means"
