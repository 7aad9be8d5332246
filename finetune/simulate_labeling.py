"""``python -m finetune.simulate_labeling``: the labeling loop, simulated (finetune/labeling/loop.py)."""

import sys

from finetune.labeling.loop import main

if __name__ == "__main__":
    sys.exit(main())
