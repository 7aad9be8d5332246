"""One vocabulary for predictions: the columns of a run's ``predictions_<split>.parquet``, of
``finetune.predict --output`` and of ``finetune.suggest``, and the fields of an answer in JSON (the
``Predictor``, ``POST /predict``, ``finetune.predict TEXT``). Every module names them from here.

A table holds one row per text:

    predicted    what the model predicts: a label (single-label), the labels above their thresholds joined by
                 task.label_separator ("" for none; multi-label), or the value (regression); ABSTAINED on a row
                 below --min-confidence
    confidence   how sure the model is of it (classes only): the predicted label's probability; multi-label, the
                 least sure of its label decisions (a scored split's wrong row: its surest wrong decision)
    p_<label>    each label's probability (single-label: they sum to 1; multi-label: each label on its own);
                 ``finetune.predict --all-scores``
    abstained    with --min-confidence: whether the row was left unanswered

A run's scored splits add ``row``, ``gold``, and ``correct`` (classes) or ``error`` (regression). An answer in JSON
is a ranked list of ``{"label", "score"}`` (single- and multi-label: the shape of transformers' ``pipeline`` and of
Text Embeddings Inference, whose clients read it; ``score`` is the label's ``p_<label>``), ``{"predicted": value}``
(regression), or, below the cut-off, ``{"predicted": ABSTAINED, "confidence", "abstained": true, "best_guess"}``.

Files written before this vocabulary used other names; ``current`` maps them (``OLD_NAMES``) where a table is read.
"""

from typing import Any, Dict, Iterable, List, Optional, Sequence

PREDICTED = "predicted"
CONFIDENCE = "confidence"
PROBABILITY = "p_"  # p_<label>
ABSTAINED_COLUMN = "abstained"
ABSTAINED = "(abstained)"  # the prediction of a text the model did not answer

# A run's scored splits (finetune/runs/examples.py)
ROW = "row"  # the row's position in its split, as loaded (after carving validation and max_*_samples)
GOLD = "gold"
CORRECT = "correct"
ERROR = "error"

# An answer in JSON: an item of a ranked list, and what an abstention keeps of the answer it withheld
LABEL = "label"
SCORE = "score"
BEST_GUESS = "best_guess"

# finetune.suggest: the runner-up beside the predicted label
SECOND = "second"
SECOND_CONFIDENCE = "second_confidence"

# Names of earlier versions: the predict command's columns, and a multi-label run's per-label scores.
OLD_NAMES = {"predicted_label": PREDICTED, "predicted_labels": PREDICTED, "predicted_score": PREDICTED}
OLD_CONFIDENCE = "score"  # beside predicted_label(s)
OLD_PROBABILITY = "score_"  # score_<label>


def probability(label: Any) -> str:
    """The column of a label's probability: ``p_<label>``."""
    return f"{PROBABILITY}{label}"


def probability_labels(columns: Iterable[str]) -> List[str]:
    """The labels of a table's ``p_<label>`` columns, in column order."""
    return [c[len(PROBABILITY) :] for c in columns if c.startswith(PROBABILITY)]


def renames(columns: Iterable[str], labels: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """The old names among ``columns`` and their current ones. With ``labels``, only their ``score_<label>``
    columns are probabilities (a table may hold text columns of any name); a name the table already has in the
    current vocabulary is left as it is."""
    columns = list(columns)
    found: Dict[str, str] = {c: OLD_NAMES[c] for c in columns if c in OLD_NAMES}
    if found and OLD_CONFIDENCE in columns:
        found[OLD_CONFIDENCE] = CONFIDENCE
    for column in columns:
        label = column[len(OLD_PROBABILITY) :]
        if column.startswith(OLD_PROBABILITY) and (labels is None or label in labels):
            found[column] = probability(label)
    return {old: new for old, new in found.items() if new not in columns}


def current(table, labels: Optional[Sequence[str]] = None):
    """A DataFrame of predictions in the current vocabulary, whichever version wrote it (``renames``)."""
    names = renames(table.columns, labels)
    return table.rename(columns=names) if names else table
