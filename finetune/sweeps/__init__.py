"""Sweeps: the leaderboard a sweep writes, its statistics by configuration, and paired comparisons of runs."""
