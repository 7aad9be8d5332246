"""``python -m finetune.suggest``: which rows to label next (finetune/labeling/suggest.py)."""

import sys

from finetune.labeling.suggest import main

if __name__ == "__main__":
    sys.exit(main())
