"""``python -m finetune.serve``: the HTTP server of a trained run (finetune/serving/server_cli.py)."""

import sys

from finetune.serving.server_cli import main

if __name__ == "__main__":
    sys.exit(main())
