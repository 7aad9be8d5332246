"""``python -m finetune.compare``: the paired comparison of runs (finetune/sweeps/compare.py)."""

from finetune.sweeps.compare import main

if __name__ == "__main__":
    main()
