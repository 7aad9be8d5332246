"""Training one run: the model, adapters, hardware, the Trainer, its callbacks and trackers, and the run itself."""
