"""Scoring documents read as windows (``task.long_text``): metrics, early stopping and the best
checkpoint follow the documents, not the windows, and every scored split is one row per document."""

from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from finetune.tasks.kind import TaskKind


def logits_of(predictions):
    """The logits among the Trainer's predictions (a tuple whose first item is the logits for some models)."""
    return predictions[0] if isinstance(predictions, tuple) else predictions


def first_per_document(values, documents):
    """The value of each document's first window, in document order (its label: every window carries it)."""
    _, first = np.unique(np.asarray(documents), return_index=True)
    return np.asarray(values)[first]


class DocumentMetrics:
    """The Trainer's ``compute_metrics`` for windows: the kind's metrics on the documents' aggregated logits.

    The Trainer evaluates in its sampler's order (longest window first): ``eval_order`` gives the dataset row
    of each row of logits of the latest evaluation (None: dataset order), so each is matched to its document.
    """

    def __init__(
        self,
        kind: TaskKind,
        documents: Sequence[int],
        aggregation: str,
        eval_order: Callable[[], Optional[Sequence[int]]],
    ):
        self.kind, self.documents, self.aggregation = kind, np.asarray(documents), aggregation
        self.eval_order = eval_order

    def __call__(self, eval_pred) -> Dict[str, float]:
        order = self.eval_order()
        documents = self.documents if order is None else self.documents[np.asarray(order)]
        logits = self.kind.aggregate(logits_of(eval_pred.predictions), documents, self.aggregation)
        return self.kind.evaluate(first_per_document(eval_pred.label_ids, documents), logits)


def per_document(output: Any, documents: Sequence[int], kind: TaskKind, aggregation: str) -> Any:
    """``output`` (one row per window, in the split's order) as one row per document: aggregated logits,
    the document's label."""
    logits = kind.aggregate(logits_of(output.predictions), documents, aggregation)
    labels = None if output.label_ids is None else first_per_document(output.label_ids, documents)
    return output._replace(predictions=logits, label_ids=labels)


def window_counts(documents: Sequence[int], tokens: int) -> Dict[str, Any]:
    """What reading a split as windows costs: windows, documents, windows per document, tokens computed."""
    windows, count = len(documents), len(np.unique(np.asarray(documents)))
    return {
        "documents": count,
        "windows": windows,
        "windows_per_document": windows / max(count, 1),
        "tokens": int(tokens),
    }


def scored_documents(
    outputs: Dict[str, Any], encoded: Dict[str, Any], kind: TaskKind, aggregation: str, document_column: str
):
    """Each split's window outputs as document outputs, and what its windows cost (``window_counts``)."""
    documents, costs = {}, {}
    for split, output in outputs.items():
        windows = encoded[split][document_column]
        costs[split] = window_counts(windows, sum(len(ids) for ids in encoded[split]["input_ids"]))
        documents[split] = per_document(output, windows, kind, aggregation)
    return documents, costs
