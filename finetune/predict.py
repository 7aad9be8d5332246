"""``python -m finetune.predict``: the predict command (finetune/serving/predict.py)."""

import sys

from finetune.serving.predict import main

if __name__ == "__main__":
    sys.exit(main())
