"""A pool of unlabeled texts, streamed a chunk at a time and ranked by a strategy (finetune/labeling/strategies.py).

Memory stays that of one chunk plus the strategy's candidates, however long the pool: only the ``candidates``
rows of highest priority seen so far are kept (their ids, texts and scores). Rows whose text the run was
trained, validated or tested on are left out, and so are repeats of a text among the candidates (the first
row of a text is kept).
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set

import numpy as np

from finetune.labeling.strategies import Strategy, row_id, top_two
from finetune.runs.model_folder import ModelRecord
from finetune.serving.tables import CHUNK_ROWS, read_chunks
from finetune.tasks.vocabulary import probability, probability_labels


@dataclass
class Counts:
    """What streaming the pool found, for the summary line."""

    rows: int = 0
    known: int = 0  # texts of the run's data files (train, validation, test) or of --exclude files
    repeated: int = 0  # repeats of a candidate's text
    empty: int = 0  # rows without text
    scoring_s: float = 0.0

    def describe(self) -> str:
        left = [f"{self.known} in the run's data", f"{self.repeated} repeated", f"{self.empty} without text"]
        return f"{self.rows} pool rows read in {self.scoring_s:.1f} s; left out: {', '.join(left)}"


@dataclass
class Candidates:
    """The rows of highest priority so far, in pool order within equal priority."""

    capacity: int
    kept: Any = None  # a DataFrame: id, row, the text columns, priority, and p_<i> per label (by its index)

    def add(self, frame: Any, counts: Counts) -> None:
        import pandas as pd

        merged = frame if self.kept is None else pd.concat([self.kept, frame], ignore_index=True)
        before = len(merged)
        merged = merged.drop_duplicates("id", keep="first")  # the first row of a text (pool order)
        counts.repeated += before - len(merged)
        if len(merged) > self.capacity:
            order = np.lexsort((merged["row"].to_numpy(), -merged["priority"].to_numpy()))
            merged = merged.iloc[np.sort(order[: self.capacity])]
        self.kept = merged.reset_index(drop=True)


def texts_of(frame: Any, text_fields: List[str]) -> List[Any]:
    """The texts of a chunk as the model reads them: strings, or (first, second) pairs."""
    if len(text_fields) == 1:
        return frame[text_fields[0]].tolist()
    return list(zip(*(frame[f].tolist() for f in text_fields)))


def has_text(frame: Any, text_fields: List[str]) -> Any:
    mask = np.ones(len(frame), dtype=bool)
    for name in text_fields:
        values = frame[name]
        mask &= values.map(lambda v: isinstance(v, str) and bool(v.strip())).to_numpy()
    return mask


def known_ids(files: Iterable[Path], record: ModelRecord) -> Set[str]:
    """The ids of every text in ``files`` (the run's labeled data): rows not to suggest again."""
    ids: Set[str] = set()
    for path in files:
        for chunk in read_chunks(path, record):
            if all(name in chunk.columns for name in record.text_fields):
                chunk = chunk[has_text(chunk, record.text_fields)]
                ids.update(row_id(t) for t in texts_of(chunk, record.text_fields))
    return ids


def ranked(
    pool: Path,
    record: ModelRecord,
    strategy: Strategy,
    n: int,
    seed: int,
    predictor: Any = None,
    known: Optional[Set[str]] = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Any = None,
):
    """The strategy's candidates from ``pool`` (a DataFrame) and what streaming found.

    ``predictor`` scores the rows (a trained run's, for strategies that need one); ``progress``: a tqdm bar
    advanced by rows.
    """
    import pandas as pd

    known = known or set()
    counts = Counts()
    candidates = Candidates(strategy.candidates(n))
    started = time.perf_counter()
    first = 0
    for chunk in read_chunks(pool, record, chunk_rows):
        rows = np.arange(first, first + len(chunk)) + 1  # 1-based, as a spreadsheet numbers data rows
        first += len(chunk)
        counts.rows += len(chunk)
        with_text = has_text(chunk, record.text_fields)
        counts.empty += int((~with_text).sum())
        chunk, rows = chunk[with_text], rows[with_text]
        ids = np.array([row_id(t) for t in texts_of(chunk, record.text_fields)], dtype=object)
        fresh = np.array([i not in known for i in ids], dtype=bool)
        counts.known += int((~fresh).sum())
        chunk, rows, ids = chunk[fresh], rows[fresh], ids[fresh]
        frame = pd.DataFrame({"id": ids, "row": rows})
        for name in record.text_fields:
            frame[name] = chunk[name].to_numpy()
        probabilities = None
        if strategy.needs_run and len(frame):
            probabilities = predictor.scores(
                texts_of(frame, record.text_fields), progress=progress if progress is not None else False
            )
            for i in range(probabilities.shape[1]):
                frame[probability(i)] = probabilities[:, i]
        elif progress is not None:
            progress.update(len(frame))
        if len(frame):
            frame["priority"] = strategy.priority(probabilities, frame["id"].tolist(), seed)
            candidates.add(frame, counts)
    counts.scoring_s = time.perf_counter() - started
    kept = candidates.kept
    if kept is None:
        kept = pd.DataFrame(columns=["id", "row", *record.text_fields, "priority"])
    return kept, counts


def chosen(
    kept: Any,
    record: ModelRecord,
    strategy: Strategy,
    n: int,
    seed: int,
    labels: List[str],
    embedder: Any = None,
):
    """The ``n`` rows to label next among the candidates, ranked, with the reason for each."""
    import pandas as pd

    embeddings = None
    if strategy.clusters and len(kept) > n:
        embeddings = embedder.embeddings(texts_of(kept, record.text_fields))
    picked = strategy.choose(kept["priority"].to_numpy(dtype="float64"), n, seed, embeddings)
    rows = kept.iloc[picked].reset_index(drop=True)
    out: Dict[str, Any] = {"id": rows["id"], "row": rows["row"]}
    for name in record.text_fields:
        out[name] = rows[name]
    out[record.label_field] = ""  # for the person labeling; an empty cell is skipped when the file trains
    out["rank"] = np.arange(1, len(rows) + 1)
    out["strategy"] = strategy.name
    out["score"] = rows["priority"].to_numpy(dtype="float64")
    indices = sorted(int(i) for i in probability_labels(rows.columns) if i.isdigit())
    if indices and labels:
        probabilities = rows[[probability(i) for i in indices]].to_numpy(dtype="float64")
        out.update(top_two(probabilities, labels))
    return pd.DataFrame(out)
