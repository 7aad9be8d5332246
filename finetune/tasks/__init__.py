"""Tasks: a **task** is a data set and how to read it (the ``task`` config group); its **kind** is what its labels
mean (single-label, multi-label, regression): how they are read, trained on, scored, calibrated and drawn."""
