"""finetune: Hydra-configured fine-tuning of transformer encoders for text classification."""

from finetune.config import FinetuneError

__all__ = ["FinetuneError"]
__version__ = "0.1.0"
