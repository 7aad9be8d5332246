"""``python -m finetune.serve``: the HTTP server of a trained run (finetune/serving/serve.py)."""

import sys

from finetune.serving.serve import main

if __name__ == "__main__":
    sys.exit(main())
