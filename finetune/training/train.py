"""One fine-tuning run, start to finish: config in, run folder out.

``run`` goes through four named stages: ``set_up`` (config checks, data, tokenizer, model and
Trainer, each library call inside a ``setup_stage`` so that a setting a library refuses is told
in one line), ``train``, ``score`` (the best model on every labeled split) and ``write_outputs``
(model/, metrics.json, pictures, model card, submission files).
"""

import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from omegaconf import DictConfig

from finetune.config.checks import validate
from finetune.distributed import rank
from finetune.errors import FinetuneError, StoppedBySignal, setup_stage, unwrapped
from finetune.hub import go_offline_if_unreachable
from finetune.runs.folders import latest_checkpoint
from finetune.runs.saved import SavedRun
from finetune.tasks.data import DOCUMENT, LABEL, label_array
from finetune.tasks.registry import best_metric
from finetune.training.model import longer_context
from finetune.training.outputs import show_examples, write_outputs
from finetune.training.schedule import sized_settings

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
    head: str  # how the classification head started (model.head), in words

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

    log.info(console_summary(prepared.kind, metrics, run_dir, SavedRun(run_dir).logs_dir))
    verdict = metrics["train"]["baseline_check"]
    if verdict is not None and not verdict["learned"]:  # the last word, where the summary is read
        log.warning(verdict["message"])
    if trainer.is_world_process_zero():
        show_examples(prepared)
    return metrics


def set_up(cfg: DictConfig, run_dir: Path) -> PreparedRun:
    """Check the config, load and check the data, then build tokenizer, model and Trainer."""
    validate(cfg)  # config mistakes fail here, before heavy imports and downloads
    checkpoint = latest_checkpoint(run_dir, remove_incomplete=rank() == 0) if cfg.get("resume") else None
    task, pretrained, hardware, adapter = built_groups(cfg)
    if task.detected is not None:  # a resumed run must read its file as it did
        SavedRun(run_dir).record_detected(task.detected.as_dict(), write=rank() == 0)
    splits = loaded_data(cfg, task)

    from finetune.training.adapters import parameter_counts
    from finetune.training.callbacks import instantiate_callbacks
    from finetune.training.trackers import use_run_trackers
    from finetune.training.trainer import build_trainer

    args = arguments(cfg, run_dir, task, pretrained, hardware, adapter, splits, checkpoint)
    callbacks = instantiate_callbacks(cfg.callbacks)  # after the arguments: the TensorBoard one reads where to write
    with setup_stage("Loading the tokenizer", ("model",), "model.name_or_path"):
        tokenizer = pretrained.load_tokenizer()
    task.check_max_length(tokenizer.model_max_length, pretrained.name_or_path)
    lengths, encoded = tokenized(task, splits, tokenizer, args, hardware)
    model, head = built_model(cfg, task, pretrained, hardware, adapter, tokenizer, encoded["train"], args, checkpoint)
    with setup_stage("Building the Trainer", ("trainer", "hardware"), "trainer.*, hardware.*"):
        validation = encoded.get("validation")  # none with few labels and a labeled test file (tasks/data.py)
        documents = validation[DOCUMENT] if task.long_text.windowed and validation is not None else None
        trainer = build_trainer(
            args,
            model,
            tokenizer,
            encoded["train"],
            validation,
            task.kind,
            callbacks,
            hardware.padding_multiple,
            documents,
            task.long_text.aggregation,
        )
    use_run_trackers(trainer, cfg)
    parameters = parameter_counts(model)
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
        parameters,
        lengths,
        head,
    )


def built_groups(cfg: DictConfig) -> Tuple[Any, Any, Any, Any]:
    """The task, model, hardware and peft groups' objects, and what their small files can refuse before any data."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    with setup_stage("Reading the config", ("task", "model", "hardware"), "task.*, model.*, hardware.*"):
        try:
            task, pretrained, hardware, adapter = (
                instantiate(cfg[group], _convert_="object") for group in ("task", "model", "hardware", "peft")
            )
        except InstantiationException as error:  # the task reads its file when built: its message, as it is
            raise unwrapped(error) from None
    refuse_early(cfg, task, pretrained, adapter)
    if (task.path and not task.data_files.get("train")) or not pretrained.is_local:
        go_offline_if_unreachable()
    return task, pretrained, hardware, adapter


def loaded_data(cfg: DictConfig, task) -> Dict[str, Any]:
    """The task's splits, loaded and checked; the kind fitted to the training labels.

    Data first: its errors (and, offline, a missing hub data set) surface before the slow imports.
    """
    started = time.perf_counter()
    with setup_stage("Loading the data", ("task",), "task.path, task.name, task.data_files.*"):
        splits = task.load(seed=cfg.seed)
    if task.detected is not None:
        log.info(task.detected.describe(task.data_files["train"]))
    log.info("%s\nLoaded and checked in %.1f s", task.summary(splits), time.perf_counter() - started)
    for warning in task.warnings(splits):
        log.warning(warning)
    task.kind.fit(label_array(splits["train"]))  # what the labels mean: loss, predictions, metrics, reports
    return splits


def arguments(cfg: DictConfig, run_dir: Path, task, pretrained, hardware, adapter, splits, checkpoint: Optional[str]):
    """The TrainingArguments: the trainer group over the hardware's and the task's defaults. The run's
    environment.json is written here, so that a run that fails later still tells what it ran on."""
    from finetune.runs.environment import data_fingerprint, environment
    from finetune.tasks.metrics import greater_is_better
    from finetune.training.adapters import learning_rate_note
    from finetune.training.trainer import training_arguments

    with setup_stage("Choosing the hardware", ("hardware",), "hardware.*"):
        hardware_args = hardware.resolve(pretrained.model_type)
    log.info("%s\n%s", hardware.describe(), learning_rate_note(cfg.trainer, adapter))
    if rank() == 0:
        env = environment(hardware.summary(), data_fingerprint(splits, [*task.text_fields, LABEL]))
        SavedRun(run_dir).write_environment({**env, "resumed_from": Path(checkpoint).name} if checkpoint else env)
    if checkpoint:
        log.info("Resuming from %s", checkpoint)
    best = best_metric(task)
    defaults = {
        **hardware_args,
        **sized_settings(cfg, len(splits["train"])),
        "metric_for_best_model": best,
        "greater_is_better": greater_is_better(best),
        "run_name": run_dir.name,
    }
    with setup_stage("Building the TrainingArguments", ("trainer",), "trainer.*"):
        return training_arguments(cfg.trainer, defaults, run_dir)


def built_model(cfg: DictConfig, task, pretrained, hardware, adapter, tokenizer, train, args, checkpoint=None):
    """The model with the task's head (seeded; from class means with few labels, after the contrastive stage
    unless a checkpoint's weights replace them), LoRA's adapters where asked, prepared for the hardware."""
    from transformers import set_seed

    set_seed(cfg.seed)  # before the classification head is initialised
    with setup_stage("Loading the model", ("model",), "model.name_or_path, model.attn_implementation"):
        model = pretrained.load_model(task.kind.model_config(), tokenizer)
    hardware.check_model(model, args)  # args: trainer.bf16 may have been set by hand
    task.kind.prepare_model(model)
    head = "fresh (transformers' random initialisation)"
    if pretrained.uses_prototypes(task.kind, len(train)):
        head = pretrained.prototype_head(model, task.kind, train, tokenizer, args, resumed=bool(checkpoint))
    elif pretrained.contrastive_pairs:
        raise FinetuneError(
            f"model.contrastive_pairs={pretrained.contrastive_pairs} trains the body before the few-label head, "
            f"which this run does not use (model.head={pretrained.head}, {len(train)} training rows): "
            "set model.head=prototypes, or model.contrastive_pairs=0."
        )
    log.info("Head: %s (model.head=%s)", head, pretrained.head)
    with setup_stage("Adding the LoRA adapters", ("peft",), "peft.*"):
        model = adapter.wrap(model)  # LoRA: adapters on the encoder, the head trained in full
    hardware.prepare_model(model)  # after wrap: LoRA's dropouts too
    return model, head


def tokenized(task, splits, tokenizer, args, hardware) -> Tuple[Dict[str, Any], Any]:
    """The token lengths of each split (logged, with a warning when many rows are cut), and the splits tokenized."""
    log.info("Token lengths (the model's tokenizer; long texts read by %s):", task.long_text.describe())
    lengths = task.lengths(splits, tokenizer)
    hint = longer_context(lengths.get("train"), task.max_length, tokenizer)
    if hint:
        log.info(hint)
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


def refuse_early(cfg: DictConfig, task, pretrained, adapter) -> None:
    """What the model's small files and the trackers' settings can judge, before the data is read: one line each."""
    pretrained.check_folder()
    limit, said_by = pretrained.length_limit()
    task.check_max_length(limit, pretrained.name_or_path, said_by)
    adapter.check_model(pretrained)  # LoRA: target modules the architecture lacks
    pretrained.check_pairs(adapter)  # the contrastive stage: not with a fresh head, nor under LoRA
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
            f"The run trained no step (trainer.num_train_epochs={args.num_train_epochs}, "
            f"trainer.max_steps={args.max_steps}, {len(prepared.encoded['train'])} train rows), so nothing was saved: "
            "raise trainer.num_train_epochs or trainer.max_steps."
        )
    if trainer.stop.signum is not None:
        raise StoppedBySignal(
            f"Stopped by {signal.Signals(trainer.stop.signum).name} at step {trainer.state.global_step}; "
            f"checkpoint saved in {SavedRun(run_dir).checkpoints_dir}. Continue with: python run.py resume={run_dir}",
            trainer.stop.signum,
        )
    # LoRA: adapter/ saved, then merged: from here on a plain model.
    prepared.adapter.finish(trainer, SavedRun(run_dir).adapter_dir)
    return result


def score(prepared: PreparedRun, result) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The best model on every labeled split after train: the outputs by split, and metrics.json's content."""
    from finetune.training.documents import scored_documents
    from finetune.training.trainer import logits_of

    trainer, kind, encoded = prepared.trainer, prepared.kind, prepared.encoded
    # From here on the kind scores the predictions itself, with what it calibrated on validation
    # (multi-label thresholds).
    trainer.compute_metrics = None
    # Row i of each output is row i of the split (TaskTrainer.predict restores the order): saved per example.
    labeled = [split for split in encoded if split != "train" and prepared.task.is_labeled(encoded[split])]
    outputs = {split: trainer.predict(encoded[split], metric_key_prefix=split) for split in labeled}
    long_text, costs = prepared.task.long_text, {}
    if long_text.windowed:  # one row per document from here on
        outputs, costs = scored_documents(outputs, encoded, kind, long_text.aggregation, DOCUMENT)
    raw = {split: logits_of(output.predictions) for split, output in outputs.items()}
    calibration = (
        kind.calibrate(outputs["validation"].label_ids, raw["validation"])
        if "validation" in outputs
        else {"method": "none", "note": "not fitted: no validation split (few labels, every labeled row trained)"}
    )
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
        scalars = tensorboard_scalars(split, metrics[split], evaluated=trainer.args.eval_strategy != "no")
        if scalars:
            trainer.log(scalars)
    kind.fold_temperatures(trainer.model)  # from here on the model itself gives calibrated probabilities
    metrics["train"] = {**train_report(prepared, result), "baseline_check": baseline_check(prepared, outputs, metrics)}
    return {"outputs": outputs, "logits": logits, "raw_logits": raw}, metrics


def baseline_check(prepared: PreparedRun, outputs, metrics: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Each scored split's trivial baseline (into its metrics); the verdict on the largest, logged if not learned."""
    from finetune.tasks.baseline import check, verdict_line

    trainer = prepared.trainer
    scored = {split: (output.label_ids, metrics[split]) for split, output in outputs.items()}
    baselines, verdict = check(prepared.kind, best_metric(prepared.task), label_array(prepared.splits["train"]), scored)
    for split, scores in baselines.items():
        metrics[split]["baseline"] = scores
    if verdict is not None and not verdict["learned"]:
        verdict["message"] = verdict_line(verdict, trainer.state.global_step, trainer.args.learning_rate)
        log.warning(verdict["message"])
    return verdict


def train_report(prepared: PreparedRun, result) -> Dict[str, Any]:
    """What metrics.json says of training: time, speed, loss, steps, tokens, weights, batch size, long texts."""
    from finetune.training.callbacks import early_stopping_report
    from finetune.training.trainer import mean_training_loss

    trainer, kind, encoded, long_text = prepared.trainer, prepared.kind, prepared.encoded, prepared.task.long_text
    return {
        "runtime_s": result.metrics["train_runtime"],
        "samples_per_second": result.metrics["train_samples_per_second"],
        "steps_per_second": result.metrics["train_steps_per_second"],
        "loss": mean_training_loss(trainer),
        "epochs": result.metrics.get("epoch"),
        "steps": result.global_step,
        "samples": len(encoded["train"]),
        "metric_for_best_model": best_metric(prepared.task),
        # on this process; real / computed tokens: the share of the compute spent on text, not padding
        "tokens": trainer.real_tokens,
        "padding_efficiency": trainer.real_tokens / max(trainer.computed_tokens, 1),
        "class_weights": kind.weights,
        "parameters": prepared.parameters,
        "batch_size": trainer.state.train_batch_size,  # per step and process: trainer.auto_find_batch_size may lower it
        "early_stopping": early_stopping_report(trainer),
        "long_text": long_text.as_dict(),
        "token_lengths": prepared.lengths,
        **(
            {"documents": len(prepared.splits["train"]), "windows": len(encoded["train"])} if long_text.windowed else {}
        ),
    }


def calibrated_logits(kind, split: str, raw):
    """The split's logits through the fitted temperatures; a temperature never moves a prediction (checked here)."""
    calibrated = kind.calibrated(raw)
    if not kind.same_decisions(raw, calibrated):
        raise FinetuneError(
            f"Calibration moved a prediction on the {split} split; temperatures {kind.temperatures} must be positive."
        )
    return calibrated


def tensorboard_scalars(split: str, report: Dict[str, Any], evaluated: bool = True) -> Dict[str, float]:
    """A scored split's numbers for TensorBoard (validation's scores were logged at each evaluation, where the
    run evaluated while training; its calibration is new)."""
    prefix = split.replace("validation", "eval", 1)
    logged = split == "validation" and evaluated
    scalars = {} if logged else {f"{prefix}_{k}": v for k, v in report.items() if isinstance(v, float)}
    for when in ("before", "after"):
        values = (report.get("calibration") or {}).get(when) or {}
        scalars.update({f"{prefix}_{name}_{when}_calibration": v for name, v in values.items()})
    return scalars
