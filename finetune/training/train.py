"""One fine-tuning run, start to finish: config in, run folder out.

``run`` goes through four named stages: ``set_up`` (config checks, data, tokenizer, model and
Trainer, each library call inside a ``setup_stage`` so that a setting a library refuses is told
in one line), ``train``, ``score`` (the best model on every labeled split) and ``write_outputs``
(model/, metrics.json, pictures, model card, submission files).
"""

import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from omegaconf import DictConfig

from finetune.config.checks import validate
from finetune.distributed import rank
from finetune.errors import FinetuneError, StoppedBySignal, setup_stage
from finetune.files import replaced_atomically, write_json
from finetune.hub import go_offline_if_unreachable
from finetune.runs.folders import latest_checkpoint
from finetune.tasks.data import DOCUMENT, LABEL, label_array
from finetune.tasks.kinds import best_metric

log = logging.getLogger(__name__)


@dataclass
class PreparedRun:
    """What ``set_up`` builds and the later stages use."""

    cfg: DictConfig
    run_dir: Path
    task: Any  # finetune.tasks.data.TextClassificationData
    hardware: Any  # finetune.training.hardware.Hardware
    adapter: Any  # finetune.training.adapters.FullFineTuning or Lora
    splits: Dict[str, Any]  # the loaded splits (datasets.Dataset)
    encoded: Dict[str, Any]  # the same, tokenized
    tokenizer: Any
    trainer: Any  # finetune.training.trainer.TaskTrainer
    checkpoint: Optional[str]  # resumed from
    parameters: Dict[str, Any]
    lengths: Dict[str, Any]  # per split: token lengths, and the share longer than task.max_length

    @property
    def kind(self):
        return self.task.kind


def run(cfg: DictConfig, run_dir: Path) -> Dict[str, Any]:
    """Fine-tune ``cfg.model`` on ``cfg.task``; write model/, logs/, metrics.json and the reports into ``run_dir``."""
    prepared = set_up(cfg, run_dir)
    result = train(prepared)
    outputs, metrics = score(prepared, result)
    trainer = prepared.trainer
    if trainer.is_world_process_zero():
        write_outputs(prepared, outputs, metrics)
    from finetune.runs.report import console_summary

    log.info(console_summary(prepared.kind, metrics, run_dir, run_dir / "logs"))
    if prepared.task.examples and trainer.is_world_process_zero():
        show_examples(prepared)
    return metrics


def set_up(cfg: DictConfig, run_dir: Path) -> PreparedRun:
    """Check the config, load and check the data, then build tokenizer, model and Trainer."""
    from hydra.utils import instantiate

    validate(cfg)  # config mistakes fail here, before heavy imports and downloads
    checkpoint = latest_checkpoint(run_dir, remove_incomplete=rank() == 0) if cfg.get("resume") else None
    with setup_stage("Reading the config", ("task", "model", "hardware"), "task.*, model.*, hardware.*"):
        task, source, hardware, adapter = (
            instantiate(cfg[group], _convert_="object") for group in ("task", "model", "hardware", "peft")
        )
    refuse_early(cfg, task, source, adapter)
    if (task.path and not task.data_files.get("train")) or not source.is_local:
        go_offline_if_unreachable()

    # Data first: its errors (and, offline, a missing hub data set) surface before the slow imports.
    started = time.perf_counter()
    with setup_stage("Loading the data", ("task",), "task.path, task.name, task.data_files.*"):
        splits = task.load(seed=cfg.seed)
    log.info("%s\nLoaded and checked in %.1f s", task.summary(splits), time.perf_counter() - started)
    task.kind.fit(label_array(splits["train"]))  # what the labels mean: loss, predictions, metrics, reports

    from transformers import set_seed

    from finetune.runs.report import data_fingerprint, environment
    from finetune.tasks.metrics import greater_is_better
    from finetune.training.adapters import learning_rate_note, parameter_counts
    from finetune.training.callbacks import instantiate_callbacks
    from finetune.training.trackers import use_run_trackers
    from finetune.training.trainer import build_trainer, training_arguments

    with setup_stage("Choosing the hardware", ("hardware",), "hardware.*"):
        hardware_args = hardware.resolve()
    log.info("%s\n%s", hardware.describe(), learning_rate_note(cfg.trainer, adapter))
    if rank() == 0:  # written now, so that a run that fails later still tells what it ran on
        env = environment(hardware.summary(), data_fingerprint(splits, [*task.text_fields, LABEL]))
        write_json(run_dir / "environment.json", {**env, "resumed_from": Path(checkpoint).name} if checkpoint else env)
    if checkpoint:
        log.info("Resuming from %s", checkpoint)
    best = best_metric(task)
    defaults = {
        **hardware_args,
        "metric_for_best_model": best,
        "greater_is_better": greater_is_better(best),
        "run_name": run_dir.name,
    }
    with setup_stage("Building the TrainingArguments", ("trainer",), "trainer.*"):
        args = training_arguments(cfg.trainer, defaults, run_dir)
    callbacks = instantiate_callbacks(
        cfg.callbacks
    )  # after training_arguments: the TensorBoard one reads where to write
    with setup_stage("Loading the tokenizer", ("model",), "model.name_or_path"):
        tokenizer = source.load_tokenizer()
    task.check_max_length(tokenizer.model_max_length, source.name_or_path)
    lengths, encoded = tokenized(task, splits, tokenizer, args, hardware)

    set_seed(cfg.seed)  # before the classification head is initialised
    with setup_stage("Loading the model", ("model",), "model.name_or_path, model.attn_implementation"):
        model = source.load_model(task.kind.model_config(), tokenizer)
    task.kind.prepare_model(model)
    with setup_stage("Adding the LoRA adapters", ("peft",), "peft.*"):
        model = adapter.wrap(model)  # LoRA: adapters on the encoder, the head trained in full
    hardware.prepare_model(model)  # after wrap: LoRA's dropouts too
    with setup_stage("Building the Trainer", ("trainer", "hardware"), "trainer.*, hardware.*"):
        documents = encoded["validation"][DOCUMENT] if task.reading.windowed else None  # metrics per document
        trainer = build_trainer(
            args,
            model,
            tokenizer,
            encoded["train"],
            encoded["validation"],
            task.kind,
            callbacks,
            hardware.padding_multiple,
            documents,
            task.reading.aggregation,
        )
    use_run_trackers(trainer, cfg)
    return PreparedRun(
        cfg,
        run_dir,
        task,
        hardware,
        adapter,
        splits,
        encoded,
        tokenizer,
        trainer,
        checkpoint,
        parameter_counts(model),
        lengths,
    )


def tokenized(task, splits, tokenizer, args, hardware) -> Tuple[Dict[str, Any], Any]:
    """The token lengths of each split (logged, with a warning when many rows are cut), and the splits tokenized."""
    log.info("Token lengths (the model's tokenizer; long texts read by %s):", task.reading.describe())
    lengths = task.lengths(splits, tokenizer)
    started = time.perf_counter()
    with (
        args.main_process_first(desc="tokenization"),
        setup_stage(
            "Tokenizing", ("task", "hardware"), "task.max_length, task.long_text.*, task.text_fields, hardware.num_proc"
        ),
    ):
        encoded = task.tokenize(splits, tokenizer, hardware.tokenizer_processes(len(splits["train"])))
    log.info(
        "Tokenized in %.1f s (cached by datasets: a rerun on the same data and tokenizer skips it)",
        time.perf_counter() - started,
    )
    return lengths, encoded


def refuse_early(cfg: DictConfig, task, source, adapter) -> None:
    """What the model's small files and the trackers' settings can judge, before the data is read: one line each."""
    source.check_folder()
    limit, said_by = source.length_limit()
    task.check_max_length(limit, source.name_or_path, said_by)
    adapter.check_model(source)  # LoRA: target modules the architecture lacks
    report_to = cfg.trainer.get("report_to") or []
    report_to = [report_to] if isinstance(report_to, str) else list(report_to)
    if set(report_to) - {"tensorboard", "none"}:  # the check imports transformers: only when a tracker is named
        from finetune.training.trackers import check_trackers

        check_trackers(report_to)


def train(prepared: PreparedRun):
    """Train (or continue from the checkpoint); a run that trained no step, or was stopped, saves no result."""
    trainer, run_dir = prepared.trainer, prepared.run_dir
    result = trainer.train(resume_from_checkpoint=prepared.checkpoint)
    if trainer.state.global_step == 0:  # an untrained model is no result: write no model, metrics or card
        args = trainer.args
        raise FinetuneError(
            f"The run trained no step (trainer.num_train_epochs={args.num_train_epochs}, trainer.max_steps={args.max_steps}, "
            f"{len(prepared.encoded['train'])} train rows), so nothing was saved: raise trainer.num_train_epochs or trainer.max_steps."
        )
    if trainer.stop.signum is not None:
        raise StoppedBySignal(
            f"Stopped by {signal.Signals(trainer.stop.signum).name} at step {trainer.state.global_step}; checkpoint saved in "
            f"{run_dir / 'checkpoints'}. Continue with: python run.py resume={run_dir}",
            trainer.stop.signum,
        )
    prepared.adapter.finish(
        trainer, run_dir / "adapter"
    )  # LoRA: adapter/ saved, then merged: from here on a plain model
    return result


def score(prepared: PreparedRun, result) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The best model on every labeled split after train: the outputs by split, and metrics.json's content."""
    from finetune.training.callbacks import early_stopping_report
    from finetune.training.documents import scored_documents
    from finetune.training.trainer import logits_of, mean_training_loss

    trainer, kind, encoded = prepared.trainer, prepared.kind, prepared.encoded
    # From here on the kind scores the predictions itself, with what it calibrated on validation (multi-label thresholds).
    trainer.compute_metrics = None
    # Row i of each output is row i of the split (TaskTrainer.predict restores the order): saved per example.
    labeled = [split for split in encoded if split != "train" and prepared.task.is_labeled(encoded[split])]
    outputs = {split: trainer.predict(encoded[split], metric_key_prefix=split) for split in labeled}
    reading, costs = prepared.task.reading, {}
    if reading.windowed:  # one row per document from here on
        outputs, costs = scored_documents(outputs, encoded, kind, reading.aggregation, DOCUMENT)
    raw = {split: logits_of(output.predictions) for split, output in outputs.items()}
    calibration = kind.calibrate(outputs["validation"].label_ids, raw["validation"])
    logits = {split: calibrated_logits(kind, split, raw[split]) for split in raw}
    metrics: Dict[str, Any] = {
        "validation": None,
        "test": None,
        **{split: None for split in encoded if split != "train"},
    }
    for split, output in outputs.items():
        truth = output.label_ids
        metrics[split] = {
            "loss": output.metrics[f"{split}_loss"],
            **kind.report(truth, logits[split]),
            **costs.get(split, {}),
        }
        for key, value in (
            ("calibration", kind.calibration_report(truth, raw[split])),
            ("risk_coverage", kind.risk_coverage(truth, logits[split])),
        ):
            if value is not None:
                metrics[split][key] = value
        if split == "validation" and "calibration" in metrics[split]:
            metrics[split]["calibration"]["fitted"] = calibration  # fitted on these rows: its "after" flatters
        scalars = tensorboard_scalars(split, metrics[split])
        if scalars:
            trainer.log(scalars)
    kind.fold_temperatures(trainer.model)  # from here on the model itself gives calibrated probabilities
    metrics["train"] = {
        "runtime_s": result.metrics["train_runtime"],
        "samples_per_second": result.metrics["train_samples_per_second"],
        "steps_per_second": result.metrics["train_steps_per_second"],
        "loss": mean_training_loss(trainer),
        "epochs": result.metrics.get("epoch"),
        "steps": result.global_step,
        "samples": len(encoded["train"]),
        # on this process; real / computed tokens: the share of the compute spent on text, not padding
        "tokens": trainer.real_tokens,
        "padding_efficiency": trainer.real_tokens / max(trainer.computed_tokens, 1),
        "class_weights": kind.weights,
        "parameters": prepared.parameters,
        "batch_size": trainer.state.train_batch_size,  # per step and process: trainer.auto_find_batch_size may lower it
        "early_stopping": early_stopping_report(trainer),
        "long_text": reading.as_dict(),
        "token_lengths": prepared.lengths,
        **({"documents": len(prepared.splits["train"]), "windows": len(encoded["train"])} if reading.windowed else {}),
    }
    return {"outputs": outputs, "logits": logits, "raw_logits": raw}, metrics


def calibrated_logits(kind, split: str, raw):
    """The split's logits through the fitted temperatures; a temperature never moves a prediction, and this checks it."""
    calibrated = kind.calibrated(raw)
    if not kind.same_decisions(raw, calibrated):
        raise FinetuneError(
            f"Calibration moved a prediction on the {split} split; temperatures {kind.temperatures} must be positive."
        )
    return calibrated


def tensorboard_scalars(split: str, report: Dict[str, Any]) -> Dict[str, float]:
    """A scored split's numbers for TensorBoard (validation's scores were logged at each evaluation; its calibration is new)."""
    prefix = split.replace("validation", "eval", 1)
    scalars = {} if split == "validation" else {f"{prefix}_{k}": v for k, v in report.items() if isinstance(v, float)}
    for when in ("before", "after"):
        values = (report.get("calibration") or {}).get(when) or {}
        scalars.update({f"{prefix}_{name}_{when}_calibration": v for name, v in values.items()})
    return scalars


def write_outputs(prepared: PreparedRun, scored: Dict[str, Any], metrics: Dict[str, Any]) -> None:
    """Submission files, pictures, per-example results, model/ with its card, metrics.json, the trackers' records."""
    from finetune.runs.examples import confusion_lines, write_examples, write_out_of_fold
    from finetune.runs.report import hyperparameters, model_card, write_figures
    from finetune.training.trackers import finish_trackers
    from finetune.training.trainer import log_hparams

    cfg, run_dir, trainer, kind = prepared.cfg, prepared.run_dir, prepared.trainer, prepared.kind
    predict_unlabeled(prepared)
    names = _choices()
    title = (
        f"{names.get('model', Path(cfg.model.name_or_path).name)} on {names.get('task', cfg.task.path or 'local data')}"
    )
    truth = {split: output.label_ids for split, output in scored["outputs"].items()}
    write_figures(
        run_dir,
        run_dir / "logs",
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
        cfg, trainer.args, metrics, prepared.hardware.precision_used, prepared.adapter.describe()
    )
    card = model_card(cfg, kind, metrics, settings, run_dir.name, names.get("task"), confusion_lines(kind, mistakes))
    save_model(trainer, run_dir / "model", card, kind.model_files())
    write_json(run_dir / "metrics.json", metrics)
    log_hparams(run_dir / "logs", cfg, names, metrics)
    finish_trackers(
        trainer, metrics, {"metrics": run_dir / "metrics.json", "model card": run_dir / "model" / "README.md"}
    )


def predict_unlabeled(prepared: PreparedRun) -> None:
    """Unlabeled test splits (GLUE withholds the labels): predict them into submission files, in input order."""
    from finetune.serving.predictor import Predictor

    task, kind = prepared.task, prepared.kind
    predictor = Predictor(
        prepared.trainer.model,
        prepared.tokenizer,
        kind=kind,
        max_length=task.max_length,
        precision=prepared.hardware.precision_used,
        long_text=task.reading,
    )
    for split in (s for s in prepared.encoded if s.startswith("test") and not task.is_labeled(prepared.encoded[s])):
        columns = prepared.splits[split].select_columns(list(task.text_fields))[:]
        texts = [columns[f] for f in task.text_fields]
        predicted = kind.predict(predictor.scores(texts[0] if len(texts) == 1 else list(zip(*texts))))
        path = task.predictions_path(prepared.run_dir, split)
        task.write_predictions(path, predicted)
        log.info("The %s split is unlabeled: wrote %d predictions to %s", split, len(predicted), path)


def show_examples(prepared: PreparedRun) -> None:
    """The task's example texts through the saved model, as a user would load it."""
    from finetune.serving.predictor import Predictor, rounded

    task = prepared.task
    saved = Predictor.load(
        prepared.run_dir / "model",
        device=str(prepared.trainer.args.device),
        max_length=task.max_length,
        long_text=task.reading,
    )
    log.info("Examples:")
    for example, output in zip(task.examples, saved([e if isinstance(e, str) else tuple(e) for e in task.examples])):
        log.info("  %s\n    %s", example, rounded(output))


def save_model(trainer, path: Path, model_card: str, extra_files: Dict[str, Any]) -> None:
    """Save model, tokenizer, model card and the kind's files (thresholds) so that ``path`` is either complete or absent."""
    with replaced_atomically(path) as tmp:
        trainer.save_model(str(tmp))
        (tmp / "README.md").write_text(model_card, encoding="utf-8")
        for name, content in extra_files.items():
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def _choices() -> Dict[str, str]:
    """The presets this run was composed from (task, model, ...), when Hydra composed it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {
        group: str(choices[group]) for group in ("task", "model", "trainer", "hardware", "peft") if group in choices
    }
