"""``python -m finetune.predict``: the predict command (finetune/serving/cli.py)."""

import sys

from finetune.serving.cli import main

if __name__ == "__main__":
    sys.exit(main())
