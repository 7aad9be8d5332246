"""Tasks: reading a data set, and what its labels mean (the kinds), how they are scored and drawn."""
