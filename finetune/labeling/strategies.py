"""Which rows to label next: the query strategies of ``finetune.suggest``, on small-text's.

A pool of any length is read a chunk at a time (finetune/labeling/pool.py), so every strategy works in two
steps with bounded memory:

1. ``priority``: one number per row, from what the chunk's scores say (higher: more worth labeling). The
   pool keeps only the ``candidates`` rows of highest priority seen so far.
2. ``choose``: the ``n`` rows to suggest among those candidates (their scores, and their embeddings where
   the strategy needs them).

Strategies:

- ``margin``: breaking ties (small-text's ``BreakingTies``): the smallest gap between the two most probable
  labels, on the run's calibrated probabilities.
- ``entropy``: the largest prediction entropy (small-text's ``PredictionEntropy``).
- ``clustered``: uncertainty and diversity: the ``candidates`` rows of smallest margin are clustered on the
  run's text embeddings into ``n`` clusters (small-text's ``EmbeddingKMeans``), and the row nearest each
  centre is suggested, so that a batch does not spend its labels on ``n`` near copies of one hard text.
- ``random``: the control; a uniform sample (each row's key is a seeded hash of its text, so the sample is
  the same however the pool is chunked).
- ``cold_start``: no trained run yet: a uniform sample of ``candidates`` rows, clustered on the base model's
  embeddings; one row per cluster covers the pool's topics for the very first batch.
"""

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np

from finetune.errors import FinetuneError
from finetune.tasks.vocabulary import CONFIDENCE, PREDICTED, SECOND, SECOND_CONFIDENCE

CANDIDATES_PER_ROW = 10  # clustered clusters this many of the least certain rows per suggested row
COLD_START_SAMPLE = 1000  # cold_start clusters a uniform sample of this many rows (or 10 per suggested row)


def row_id(text: Any) -> str:
    """A row's stable id: the first 12 hex digits of the SHA-1 of its text (a pair: both texts, tab-joined).

    The same text has the same id in every file and every round, whatever its row number.
    """
    joined = "\t".join(text) if isinstance(text, (tuple, list)) else str(text)
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()[:12]


def uniform_key(ids: Sequence[str], seed: int) -> np.ndarray:
    """A number in [0, 1) per id, fixed by the id and the seed: a uniform sample, whatever the chunking."""
    salt = f"{seed}:".encode()
    return np.array(
        [int.from_bytes(hashlib.blake2b(salt + i.encode(), digest_size=8).digest(), "big") / 2.0**64 for i in ids]
    )


class _Scores:
    """What small-text's confidence strategies ask a classifier for: the probabilities of given rows."""

    def __init__(self, probabilities: Any):
        self.probabilities = probabilities

    def predict_proba(self, rows: Any) -> np.ndarray:
        return self.probabilities[np.asarray(rows)]


def _confidence(strategy: Any, probabilities: np.ndarray) -> np.ndarray:
    """small-text's confidence per row (the margin, or the entropy): lower, or higher, is queried first."""
    rows = np.arange(len(probabilities))
    strategy.score(_Scores(probabilities), rows, rows, np.array([], dtype=int), np.array([], dtype=int))
    return np.asarray(strategy.scores_, dtype="float64")


def _cluster_centres(embeddings: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Positions of the ``n`` rows nearest the centres of ``n`` k-means clusters (small-text's EmbeddingKMeans)."""
    from small_text.query_strategies import EmbeddingKMeans

    if len(embeddings) <= n:
        return np.arange(len(embeddings))
    rows = np.arange(len(embeddings))
    state = np.random.get_state()
    np.random.seed(seed)  # EmbeddingKMeans builds its KMeans without a random_state: seed numpy's
    try:
        chosen = EmbeddingKMeans(normalize=True).query(
            _Scores(None),  # the embeddings are given: small-text asks the classifier for nothing
            rows,
            rows,
            np.array([], dtype=int),
            np.array([], dtype=int),
            n=n,
            embeddings=embeddings,
        )
    finally:
        np.random.set_state(state)
    return np.asarray(chosen, dtype=int)


@dataclass(frozen=True)
class Strategy:
    """One query strategy: how rows are ranked while the pool streams, and how the last ``n`` are chosen."""

    name: str
    needs_run: bool  # ranks by a trained run's probabilities (else: a uniform key)
    clusters: bool  # chooses by clustering the candidates' embeddings
    describe: str

    def candidates(self, n: int) -> int:
        """How many rows of highest priority the pool keeps while it streams."""
        if not self.clusters:
            return n
        return n * CANDIDATES_PER_ROW if self.needs_run else max(n * CANDIDATES_PER_ROW, COLD_START_SAMPLE)

    def priority(self, probabilities: Any, ids: Sequence[str], seed: int) -> np.ndarray:
        """Higher: more worth labeling. ``probabilities``: one row per id (None where the strategy needs no run)."""
        if not self.needs_run:
            return uniform_key(ids, seed)
        from small_text.query_strategies import BreakingTies, PredictionEntropy

        probabilities = np.asarray(probabilities, dtype="float64")
        if self.name == "entropy":
            return _confidence(PredictionEntropy(), probabilities)
        return 1.0 - _confidence(BreakingTies(), probabilities)  # 1 - margin: a tie scores 1

    def choose(self, priority: np.ndarray, n: int, seed: int, embeddings: Any = None) -> np.ndarray:
        """Positions (among the candidates) of the rows to suggest, most worth labeling first."""
        order = np.argsort(-priority, kind="stable")
        if not self.clusters or len(priority) <= n:
            return order[:n]
        picked = _cluster_centres(np.asarray(embeddings, dtype="float64"), n, seed)
        return picked[np.argsort(-priority[picked], kind="stable")]


STRATEGIES: Dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("margin", True, False, "the smallest gap between the two most probable labels (breaking ties)"),
        Strategy("entropy", True, False, "the largest entropy of the calibrated probabilities"),
        Strategy(
            "clustered",
            True,
            True,
            "the least certain rows, one per cluster of their embeddings (uncertainty and diversity)",
        ),
        Strategy("random", False, False, "a uniform sample (the control)"),
        Strategy("cold_start", False, True, "one row per cluster of the base model's embeddings (no run yet)"),
    )
}


def strategy_named(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise FinetuneError(f"--strategy {name}: not a strategy; choose one of {', '.join(STRATEGIES)}.")
    return STRATEGIES[name]


def top_two(probabilities: np.ndarray, labels: List[str]) -> Dict[str, Any]:
    """The two most probable labels of each row and their probabilities: the reason a row is suggested."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :2]
    rows = np.arange(len(probabilities))
    names = np.asarray(labels, dtype=object)
    return {
        PREDICTED: names[order[:, 0]],
        CONFIDENCE: probabilities[rows, order[:, 0]],
        SECOND: names[order[:, 1]],
        SECOND_CONFIDENCE: probabilities[rows, order[:, 1]],
    }
