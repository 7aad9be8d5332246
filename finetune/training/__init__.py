"""Training one **run**: the model, adapters, hardware, the Trainer, its callbacks and trackers, and the run's
stages (set up, train, score, write its outputs into the run folder, ``model/`` with its record among them)."""
