"""How a task gets its validation split when its files have none: carved out of train (sized to it), one fold of
k-fold cross-validation, or none (few labels and a labeled test file)."""

import logging
import math

from finetune.errors import FinetuneError

log = logging.getLogger(__name__)

LABEL = "label"  # the column name DataCollatorWithPadding and the models expect
FEW_LABELS = 1000  # fewer training rows: few labels (sized trainer settings and head, finetune/training/schedule.py)
MAX_VALIDATION = 2000  # task.validation_size=null holds out a tenth of train, at most this many rows


def trains_on_every_row(task, splits) -> bool:
    """With few labels (under ``FEW_LABELS`` rows) and a labeled test file, ``task.validation_size=null`` holds
    nothing out: a handful of validation rows would judge nothing and their labels are worth more in training.
    Nothing is chosen on the test file (no checkpoint, no calibration): it only scores the model."""
    few = task.validation_size is None and len(splits["train"]) < FEW_LABELS
    if few and "test" in splits and task.is_labeled(splits["test"]):
        log.info(
            "Validation: none held out (%d train rows, fewer than %d, all train; the labeled test file scores "
            "the model; task.validation_size=<rows> holds some out)",
            len(splits["train"]),
            FEW_LABELS,
        )
        return True
    return False


def fold_split(task, train, seed: int):
    """``(train, validation, rows)``: fold ``task.fold`` of ``task.folds`` seeded folds of ``train`` is validation.

    Stratified (each fold keeps the label mix) where labels are classes and every class has a
    row for each fold; otherwise plain folds. The same seed cuts the same folds, so the K
    runs of one seed validate on disjoint parts that together are all of train.
    """
    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold

    labels = label_array(train)
    if len(train) < 2 * task.folds:
        raise FinetuneError(
            f"task.folds={task.folds} needs at least {2 * task.folds} train rows (two per fold), "
            f"got {len(train)}: lower task.folds."
        )
    counts = np.bincount(labels) if task.kind.stratify else np.array([])
    stratify = bool(task.kind.stratify and counts[counts > 0].min() >= task.folds)
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=task.folds, shuffle=True, random_state=seed)
    train_rows, validation_rows = list(splitter.split(np.zeros(len(train)), labels if stratify else None))[task.fold]
    # the train rows this fold validates on: its out-of-fold predictions
    return train.select(train_rows), train.select(validation_rows), validation_rows.tolist()


def carved(task, train, seed: int):
    """A seeded validation split out of train: stratified where labels are classes and every class
    can give a row to both sides; otherwise (multi-label, regression, a class of one row) random."""
    import numpy as np

    stratify = task.kind.stratify and bool(np.bincount(label_array(train)).min() >= 2)
    rows = len(train)
    classes = int((np.bincount(label_array(train)) > 0).sum()) if stratify else 1  # each class on both sides
    size = task.validation_size if task.validation_size is not None else sized_validation(rows, classes)
    size = size if size < 1 else int(size)
    held_out = math.ceil(size * rows) if size < 1 else size  # as train_test_split counts a fraction
    if not classes <= held_out <= rows - classes:
        example = min(max(classes, round(rows / 10)), rows - classes)
        none_left = ", which leaves no training rows" if held_out >= rows else ""
        over = f"a split stratified over {classes} classes needs" if stratify else "it must be"
        raise FinetuneError(
            f"task.validation_size={size} holds out {held_out} of the {rows} train rows{none_left}; {over} "
            f"{classes} to {rows - classes}: e.g. task.validation_size={example}, "
            "or give task.data_files.validation."
        )
    held_out_split = train.train_test_split(test_size=size, stratify_by_column=LABEL if stratify else None, seed=seed)
    log.info(
        "Validation: %d of the %d train rows held out (seeded%s; task.validation_size=%s)",
        held_out,
        rows,
        ", stratified" if stratify else "",
        task.validation_size if task.validation_size is not None else "null: a tenth, at most 2000",
    )
    return held_out_split["train"], held_out_split["test"]


def sized_validation(rows: int, classes: int) -> int:
    """Rows held out for validation when ``task.validation_size`` is null: a tenth of train, at least a row per
    class (stratified), at most ``MAX_VALIDATION`` (enough to rank checkpoints; the rest trains)."""
    return min(max(math.ceil(rows / 10), classes), MAX_VALIDATION, max(rows - classes, 1))


def label_array(ds):
    """The label ids of a split as one numpy array, without reading the text columns."""
    return ds.select_columns([LABEL]).with_format("numpy")[:][LABEL]
