"""The last stage of a run, on the main process: what it writes (model/ with its card and record, metrics.json,
pictures, per-example results, submission files for unlabeled test splits) and the examples it shows.

``prepared`` is the ``PreparedRun`` of finetune/training/train.py.
"""

import logging
from pathlib import Path
from typing import Any, Dict, List, Tuple

from finetune.runs.model_folder import ModelRecord, save_model
from finetune.runs.saved import SavedRun

log = logging.getLogger(__name__)
EXAMPLES = 3  # own rows shown when the task has no examples of its own


def write_outputs(prepared: Any, scored: Dict[str, Any], metrics: Dict[str, Any]) -> None:
    """Submission files, pictures, per-example results, model/ with its card, metrics.json, the trackers' records."""
    from finetune.runs.examples import confusion_lines, write_examples, write_out_of_fold
    from finetune.runs.report import hyperparameters, model_card, write_figures
    from finetune.training.trackers import finish_trackers
    from finetune.training.trainer import log_hparams

    cfg, run_dir, trainer, kind = prepared.cfg, prepared.run_dir, prepared.trainer, prepared.kind
    predict_unlabeled(prepared)
    names = _choices()
    if cfg.task.get("title"):
        names["task"] = cfg.task.title
    title = (
        f"{names.get('model', Path(cfg.model.name_or_path).name)} on {names.get('task', cfg.task.path or 'local data')}"
    )
    truth = {split: output.label_ids for split, output in scored["outputs"].items()}
    write_figures(
        run_dir,
        SavedRun(run_dir).logs_dir,
        kind,
        metrics,
        truth,
        scored["logits"],
        title,
        trainer.state.global_step,
        scored["raw_logits"],
    )
    mistakes = write_examples(run_dir, kind, prepared.splits, truth, scored["logits"], prepared.task.text_fields)
    if prepared.task.fold_rows is not None:  # k-fold: this fold's out-of-fold predictions, for the sweep's label audit
        write_out_of_fold(run_dir, prepared.splits["validation"], prepared.task.fold_rows, prepared.task.text_fields)
    settings = hyperparameters(
        cfg, trainer.args, metrics, prepared.hardware.precision_used, prepared.adapter.describe(), prepared.head
    )
    card = model_card(
        cfg,
        kind,
        metrics,
        settings,
        run_dir.name,
        names.get("task"),
        confusion_lines(kind, mistakes),
        example_texts(prepared.task, prepared.splits)[0],
        data_lines(prepared.task, prepared.splits),
    )
    saved = SavedRun(run_dir)
    save_model(trainer, saved.model_dir, card, ModelRecord.of_task(prepared.task, kind), kind.model_files())
    saved.write_metrics(metrics)
    log_hparams(SavedRun(run_dir).logs_dir, cfg, names, metrics)
    finish_trackers(trainer, metrics, {"metrics": saved.metrics_path, "model card": saved.model_card_path})


def data_lines(task: Any, splits: Dict[str, Any]) -> List[str]:
    """The model card's Data section: what was read off the train file, and what the model was validated on."""
    from finetune.markdown import markdown_table

    lines = []
    if task.detected is not None:
        values = task.detected.as_dict()
        lines += [
            "Read off the train file (settings left unset; each can be set, e.g. `task.label_field=<column>`):",
            "",
            *markdown_table(
                ["setting", "value", "how"], [[f"task.{k}", values[k], why] for k, why in task.detected.why.items()]
            ),
            "",
        ]
    validation = len(splits["validation"]) if "validation" in splits else 0
    held_out = (
        f"the validation file ({validation} rows)"
        if task.data_files.get("validation")
        else f"{validation} rows held out of the train file (seeded{', stratified' if task.kind.stratify else ''})"
        if validation
        else "no rows held out (few labels: every labeled row trained, the test file is the check)"
    )
    tests = [f"{s} ({len(splits[s])} rows)" for s in splits if s.startswith("test") and task.is_labeled(splits[s])]
    lines.append(
        f"Trained on {len(splits['train'])} rows; validated on {held_out}; "
        + (f"scored on {', '.join(tests)}." if tests else "no labeled test file, so the scores are validation's.")
    )
    return lines


def predict_unlabeled(prepared: Any) -> None:
    """Unlabeled test splits (GLUE withholds the labels): predict them into submission files, in input order."""
    from finetune.inference.predictor import Predictor

    task, kind = prepared.task, prepared.kind
    predictor = Predictor(
        prepared.trainer.model,
        prepared.tokenizer,
        kind=kind,
        max_length=task.max_length,
        precision=prepared.hardware.precision_used,
        long_text=task.long_text,
    )
    for split in (s for s in prepared.encoded if s.startswith("test") and not task.is_labeled(prepared.encoded[s])):
        columns = prepared.splits[split].select_columns(list(task.text_fields))[:]
        texts = [columns[f] for f in task.text_fields]
        predicted = kind.predict(predictor.scores(texts[0] if len(texts) == 1 else list(zip(*texts))))
        path = task.predictions_path(prepared.run_dir, split)
        task.write_predictions(path, predicted)
        log.info("The %s split is unlabeled: wrote %d predictions to %s", split, len(predicted), path)


def show_examples(prepared: Any) -> None:
    """The task's example texts (else a few of its own held-out rows) through the saved model folder alone, as a
    user would load it."""
    from finetune.inference.answers import rounded
    from finetune.inference.predictor import Predictor

    examples, where = example_texts(prepared.task, prepared.splits)
    if not examples:
        return
    saved = Predictor.load(SavedRun(prepared.run_dir).model_dir, device=str(prepared.trainer.args.device))
    log.info("Examples (%s):", where)
    for example, output in zip(examples, saved(examples)):
        log.info("  %s\n    %s", example, rounded(output))


def example_texts(task: Any, splits: Dict[str, Any], count: int = EXAMPLES) -> Tuple[List[Any], str]:
    """The texts the run shows its model on: ``task.examples``, else the first rows of its own held-out split."""
    if task.examples:
        return [e if isinstance(e, str) else tuple(e) for e in task.examples], "task.examples"
    split = "test" if "test" in splits else "validation"
    rows = splits[split].select(range(min(count, len(splits[split])))).select_columns(list(task.text_fields))[:]
    texts = list(zip(*(rows[f] for f in task.text_fields)))
    return [t[0] if len(t) == 1 else t for t in texts], f"the first rows of the {split} split"


def _choices() -> Dict[str, str]:
    """The presets this run was composed from (task, model, ...), when Hydra composed it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {
        group: str(choices[group]) for group in ("task", "model", "trainer", "hardware", "peft") if group in choices
    }
