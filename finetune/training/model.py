"""The `model` group: the tokenizer and the sequence-classification model of a checkpoint."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

from finetune.config.schemas import ModelFields
from finetune.errors import FinetuneError
from finetune.hub import hub_failure

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class PretrainedClassifier(ModelFields):
    """Loads ``name_or_path`` (hub id or local folder) with a fresh classification head."""

    @property
    def is_local(self) -> bool:
        return Path(self.name_or_path).expanduser().is_dir()

    def _load(self, loader, what: str, **kwargs):
        if self.trust_remote_code:
            log.warning("model.trust_remote_code=true: code shipped with '%s' will run on this machine.", self.name_or_path)
        try:
            return loader(self.name_or_path, trust_remote_code=self.trust_remote_code, **kwargs)
        except OSError as error:  # transformers reports missing files and failed downloads as OSError
            if self.is_local:
                raise FinetuneError(f"Could not load the {what} from the folder {self.name_or_path}: {error}") from error
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
