"""Labeling: which rows of a pool of unlabeled texts to label next (``python -m finetune.suggest``), ranked by a
trained run's calibrated scores and text embeddings, and the train-suggest-label loop simulated on a labeled file."""
