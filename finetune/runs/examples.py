"""Per-example results of a run: what the best model predicted for each row of each scored split
(``predictions_<split>.parquet``), and the rows it got wrong (``misclassified_<split>.csv``).

The predictions let runs be compared after the fact (``finetune.compare``) without retraining;
the task kind decides the columns (``TaskKind.example_columns``, named in finetune/tasks/vocabulary.py) and what
counts as a mistake. ``read_predictions`` gives a table of any version in the current names.
"""

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from finetune.files import replaced_atomically
from finetune.runs.saved import SavedRun
from finetune.tasks.vocabulary import CONFIDENCE, ERROR, GOLD, PREDICTED, ROW, current

TRAIN_ROW = "train_row"  # k-fold: the row's position in train (after task.max_train_samples, before the folds were cut)


def write_examples(
    run_dir: Path,
    kind,
    splits: Mapping[str, Any],
    truth: Mapping[str, Any],
    logits: Mapping[str, Any],
    text_fields: Sequence[str],
) -> Dict[str, Any]:
    """Write each scored split's predictions and mistakes; return the mistakes (tables) by split."""
    import pandas as pd

    mistakes = {}
    for split in truth:
        table = pd.DataFrame(
            {ROW: range(len(truth[split])), **kind.example_columns(truth[split], kind.scores(logits[split]))}
        )
        with replaced_atomically(SavedRun(run_dir).predictions_path(split)) as tmp:
            table.to_parquet(tmp, index=False)
        texts = splits[split].select_columns(list(text_fields)).to_pandas()
        wrong = kind.mistakes(table)
        readable = [c for c in (ROW, GOLD, PREDICTED, CONFIDENCE, ERROR) if c in wrong.columns]
        wrong = pd.concat(
            [
                wrong[[ROW]].reset_index(drop=True),
                texts.iloc[wrong[ROW].to_numpy()].reset_index(drop=True),
                wrong[readable[1:]].reset_index(drop=True),
            ],
            axis=1,
        )
        with replaced_atomically(SavedRun(run_dir).mistakes_path(split)) as tmp:
            wrong.to_csv(tmp, index=False)
        mistakes[split] = wrong
    return mistakes


def write_out_of_fold(run_dir: Path, validation, fold_rows: Sequence[int], text_fields: Sequence[str]) -> Path:
    """A k-fold job's out-of-fold predictions: each validation row's position in train (``train_row``), its text and
    what ``predictions_validation.parquet`` holds for it; a sweep's label audit joins the folds' files."""
    import pandas as pd

    table = read_predictions(run_dir, "validation")
    texts = validation.select_columns(list(text_fields)).to_pandas()
    table = pd.concat([pd.DataFrame({TRAIN_ROW: list(fold_rows)}), texts, table], axis=1)
    with replaced_atomically(SavedRun(run_dir).out_of_fold_path) as tmp:
        table.to_parquet(tmp, index=False)
    return SavedRun(run_dir).out_of_fold_path


def read_predictions(run_dir: Path, split: str):
    """A run's ``predictions_<split>.parquet``, its columns in the current vocabulary (an older run's mapped)."""
    import pandas as pd

    return current(pd.read_parquet(SavedRun(run_dir).predictions_path(split)))


def confusion_lines(kind, mistakes: Mapping[str, Any], split: str = "validation", top: int = 5) -> List[str]:
    """Model card lines: the most frequent confusions of ``split`` and where its mistakes are listed."""
    if split not in mistakes:
        return []
    table = mistakes[split]
    name = (
        SavedRun(Path("..")).mistakes_path(split).as_posix()
    )  # the card is in model/, the file beside it in the run folder
    confusions = kind.confusions(table, top)
    if not confusions:
        what = "largest errors first" if ERROR in table.columns else "most confident first"
        return [f"Rows of the {split} split, {what}: [{Path(name).name}]({name}) (in the run folder)."]
    lines = [
        f"The most frequent confusions on the {split} split ({len(table)} rows wrong; "
        "all of them, most confident first, "
        f"in [{Path(name).name}]({name}) in the run folder):",
        "",
        "| gold | predicted | rows |",
        "|---|---|---|",
    ]
    return lines + [f"| {gold} | {predicted or '(none)'} | {n} |" for gold, predicted, n in confusions]
