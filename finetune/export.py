"""``python -m finetune.export``: the ONNX export command (finetune/serving/export.py)."""

import sys

from finetune.serving.export import main

if __name__ == "__main__":
    sys.exit(main())
