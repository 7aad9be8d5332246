"""finetune: Hydra-configured fine-tuning of transformer encoders for text classification."""

from typing import Any

from finetune.errors import FinetuneError

__all__ = ["FinetuneError", "Predictor"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Predictor":  # imported on first use: it pulls in torch and transformers
        from finetune.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'finetune' has no attribute {name!r}")
