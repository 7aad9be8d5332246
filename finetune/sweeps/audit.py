"""The label audit of a k-fold sweep: the train rows whose given label is most likely wrong.

Each fold job of ``task.folds=K task.fold=0..K-1`` predicted the train rows it did not train on
(``out_of_fold.parquet``), so together the folds of one seed give every train row exactly one
out-of-fold probability per class. cleanlab's ``find_label_issues`` (confident learning:
Northcutt et al., 2021) flags the rows whose given label the model, trained without them,
finds unlikely; ``get_label_quality_scores`` ranks them (the probability of the given label,
lowest first). The folds of several seeds (or configurations) on the same rows are averaged.

``label_audit.csv`` in the sweep folder: every train row, most likely wrong first, with
``row, <text columns>, given_label, suggested_label, score, flagged``. Single-label tasks only. The fold files
are read in the current vocabulary (finetune/tasks/vocabulary.py): an older run's names are mapped.
"""

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from finetune.files import replaced_atomically
from finetune.packages import DISTRIBUTION
from finetune.runs.examples import TRAIN_ROW
from finetune.runs.saved import SavedRun
from finetune.tasks.vocabulary import (
    CONFIDENCE,
    CORRECT,
    GOLD,
    PREDICTED,
    PROBABILITY,
    ROW,
    current,
    probability,
    probability_labels,
)

log = logging.getLogger("finetune")
AUDIT_FILE = "label_audit.csv"
AUDITED_KIND = "single_label"  # one probability per class, summing to one: what confident learning reads


def out_of_fold_groups(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per configuration and seed (the jobs that differ only in ``task.fold``): their folds' out-of-fold table,
    if together they predict every train row exactly once; incomplete groups are logged and left out."""
    import pandas as pd

    jobs: Dict[str, List[SavedRun]] = {}
    for row in rows:
        run = SavedRun(row["run_folder"])
        if row["status"] == "completed" and run.out_of_fold_path.is_file():
            unfolded = " ".join(o for o in row["overrides"].split() if not o.lstrip("+~").startswith("task.fold="))
            jobs.setdefault(unfolded, []).append(run)
    groups = {}
    for key, runs in jobs.items():
        task = runs[0].task()
        if task.kind != AUDITED_KIND:
            log.warning("Label audit: '%s' is a %s task; the audit reads single-label runs only.", key, task.kind)
            continue
        tables = [current(pd.read_parquet(r.out_of_fold_path), list(task.label_names)) for r in runs]
        table = pd.concat(tables, ignore_index=True).sort_values(TRAIN_ROW, kind="stable")
        if table[TRAIN_ROW].tolist() != list(range(len(table))):
            log.warning(
                "Label audit: the fold jobs of '%s' do not predict every train row once "
                "(a fold failed or is missing); left out.",
                key or "(all)",
            )
            continue
        groups[key] = table.reset_index(drop=True)
    return groups


def label_audit(tables: List[Any], text_columns: Optional[List[str]] = None):
    """Every train row, most likely mislabeled first.

    Its given and suggested label, cleanlab's score and whether it is flagged.
    """
    import numpy as np
    import pandas as pd
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    first = tables[0]
    names = probability_labels(first.columns)
    probabilities = np.mean([t[[probability(n) for n in names]].to_numpy(dtype="float64") for t in tables], axis=0)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    given = first[GOLD].map({n: i for i, n in enumerate(names)}).to_numpy()
    text_columns = text_columns or [
        c
        for c in first.columns
        if c not in {TRAIN_ROW, ROW, GOLD, PREDICTED, CORRECT, CONFIDENCE} and not c.startswith(PROBABILITY)
    ]
    # n_jobs=1: cleanlab's default forks a multiprocessing pool, and a fork of a process that runs threads
    # (torch's, tqdm's, a test runner's) can deadlock in the child; one process is fast at a sweep's row counts.
    flagged = find_label_issues(given, probabilities, filter_by="prune_by_noise_rate", n_jobs=1)
    audit = pd.DataFrame(
        {
            "row": first[TRAIN_ROW],
            **{c: first[c] for c in text_columns},
            "given_label": first[GOLD],
            "suggested_label": [names[i] for i in probabilities.argmax(axis=1)],
            "score": get_label_quality_scores(given, probabilities),
            "flagged": flagged,
        }
    )
    return audit.sort_values(["score", "row"], kind="stable").reset_index(drop=True)


def write_label_audit(sweep_dir: Path, rows: List[Dict[str, Any]]) -> Optional[str]:
    """``label_audit.csv`` from the sweep's fold jobs.

    Returns a line for summary.md, or None when the sweep has no complete folds.
    """
    groups = out_of_fold_groups(rows)
    if not groups:
        return None
    sizes = {len(t) for t in groups.values()}
    if len(sizes) > 1 or not probability_labels(next(iter(groups.values())).columns):
        log.warning(
            "Label audit: skipped; it needs single-label fold jobs on the same train rows "
            "(found %d groups of %s rows).",
            len(groups),
            sorted(sizes),
        )
        return None
    try:
        audit = label_audit(list(groups.values()))
    except ImportError:
        log.warning("Label audit: skipped; it needs cleanlab: pip install '%s[audit]'.", DISTRIBUTION)
        return None
    with replaced_atomically(Path(sweep_dir) / AUDIT_FILE) as tmp:
        audit.to_csv(tmp, index=False)
    how = f"out-of-fold probabilities of {len(groups)} run(s) of every fold" + (", averaged" if len(groups) > 1 else "")
    return (
        f"Label audit: {int(audit['flagged'].sum())} of {len(audit)} train rows "
        "flagged as likely mislabeled by cleanlab "
        f"({how}); every row, most likely wrong first: [{AUDIT_FILE}]({AUDIT_FILE})"
    )
