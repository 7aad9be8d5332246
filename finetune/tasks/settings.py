"""What the `task` group's own settings must agree on: the kind's labels and metrics, splits, folds, pairs, examples."""

from typing import Any, List

from finetune.config.checks import closest
from finetune.config.schemas import CHOICES, SPLIT_NAME
from finetune.tasks.registry import kind_errors
from finetune.tasks.windows import long_text_errors


def task_errors(task: Any) -> List[str]:
    """Every problem with the ``task`` node, one message each (``TextClassificationData.config_errors``)."""
    detected = task.kind is None or task.label_names is None  # read off the train file: checked once read
    errors = kind_errors(task) if task.kind in CHOICES["task.kind"] and not detected else []
    for split in task.data_files:
        if not SPLIT_NAME.match(str(split)):
            errors.append(
                f"Unknown config key 'task.data_files.{split}'.{closest(str(split), ['train', 'validation', 'test'])} "
                "Valid keys: train, validation, test, or further validation_<name> / test_<name> splits."
            )
    for split, files in task.data_files.items():
        if files is not None and not isinstance(files, str):
            if not len(files) or not all(isinstance(f, str) and f for f in files):
                errors.append(
                    f"task.data_files.{split}={files}: give a file, or a list of files, e.g. [train.csv,labeled.csv]."
                )
    errors.extend(fold_errors(task))
    errors.extend(long_text_errors(task))
    if task.text_fields is not None and len(task.text_fields) not in (1, 2):
        errors.append(f"task.text_fields must name one text column or two (a pair), got {list(task.text_fields)}.")
    if not task.data_files.get("train") and not task.path:
        errors.append(
            "The task has no data: give your own file with task=file file=<path>, or set "
            "task.data_files.train=<file> (local) or task.path=<hub dataset>."
        )
    for example in task.examples if task.text_fields is not None else []:
        is_pair = not isinstance(example, str)
        if is_pair != (len(task.text_fields) == 2) or (is_pair and len(example) != 2):
            shape = "[first, second] pairs" if len(task.text_fields) == 2 else "plain strings"
            errors.append(f"task.examples must be {shape} for text_fields {list(task.text_fields)}, got {example!r}.")
            break
    return errors


def fold_errors(task: Any) -> List[str]:
    """k-fold cross-validation carves validation out of train: it needs a fold in range and no validation file."""
    folds, fold = task.get("folds"), task.get("fold", 0)
    if folds is None:
        return (
            []
            if fold == 0
            else [f"task.fold={fold} needs task.folds=K (the number of folds), e.g. task.folds=5 task.fold={fold}."]
        )
    errors = []
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        return [f"task.folds={folds!r}: must be null (no cross-validation) or an integer >= 2, e.g. task.folds=5."]
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        errors.append(
            f"task.fold={fold!r}: must be an integer in [0, {folds}) with task.folds={folds}, e.g. task.fold=0."
        )
    if task.data_files.get("validation"):
        errors.append(
            f"task.folds={folds} validates on folds of train, "
            f"but task.data_files.validation={task.data_files.validation} is given: "
            "set task.data_files.validation=null to cross-validate, or task.folds=null to use that file."
        )
    return errors
