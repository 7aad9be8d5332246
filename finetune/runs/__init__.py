"""Run folders: claimed and locked, resumed, and what a finished run leaves (report, per-example results)."""
