"""One fine-tuning run, start to finish: config in, run folder out."""

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any, Dict

from omegaconf import DictConfig

from finetune.config import FinetuneError, StoppedBySignal, best_metric, validate
from finetune.data import LABEL, label_array
from finetune.distributed import rank
from finetune.files import replaced_atomically, write_json
from finetune.hub import go_offline_if_unreachable
from finetune.resume import latest_checkpoint

log = logging.getLogger(__name__)


def save_model(trainer, path: Path, model_card: str, extra_files: Dict[str, Any]) -> None:
    """Save model, tokenizer, model card and the kind's files (thresholds) so that ``path`` is either complete or absent."""
    with replaced_atomically(path) as tmp:
        trainer.save_model(str(tmp))
        (tmp / "README.md").write_text(model_card, encoding="utf-8")
        for name, content in extra_files.items():
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def run(cfg: DictConfig, run_dir: Path) -> Dict[str, Any]:
    """Fine-tune ``cfg.model`` on ``cfg.task``; write model/, logs/, metrics.json and the reports into ``run_dir``."""
    from hydra.utils import instantiate

    validate(cfg)  # config mistakes fail here, before heavy imports and downloads
    checkpoint = latest_checkpoint(run_dir, remove_incomplete=rank() == 0) if cfg.get("resume") else None
    task = instantiate(cfg.task, _convert_="object")
    source = instantiate(cfg.model, _convert_="object")
    hardware = instantiate(cfg.hardware, _convert_="object")
    adapter = instantiate(cfg.peft, _convert_="object")
    source.check_folder()
    if (task.path and not task.data_files.get("train")) or not source.is_local:
        go_offline_if_unreachable()

    # Data first: its errors (and, offline, a missing hub data set) surface before the slow imports.
    started = time.perf_counter()
    splits = task.load(seed=cfg.seed)
    log.info("%s\nLoaded and checked in %.1f s", task.summary(splits), time.perf_counter() - started)
    kind = task.kind  # what the labels mean: loss, predictions, metrics, reports
    kind.fit(label_array(splits["train"]))

    from transformers import set_seed

    from finetune.adapters import parameter_counts
    from finetune.callbacks import early_stopping_report, instantiate_callbacks
    from finetune.examples import confusion_lines, write_examples
    from finetune.metrics import greater_is_better
    from finetune.predict import Predictor, rounded
    from finetune.report import console_summary, data_fingerprint, environment, hyperparameters, model_card, write_figures
    from finetune.trackers import finish_trackers, use_run_trackers
    from finetune.trainer import build_trainer, log_hparams, logits_of, mean_training_loss, training_arguments

    hardware_args = hardware.resolve()
    log.info(hardware.describe())
    if rank() == 0:  # written now, so that a run that fails later still tells what it ran on
        env = environment(hardware.summary(), data_fingerprint(splits, [*task.text_fields, LABEL]))
        write_json(run_dir / "environment.json", {**env, "resumed_from": Path(checkpoint).name} if checkpoint else env)
    if checkpoint:
        log.info("Resuming from %s", checkpoint)
    best = best_metric(task)
    args = training_arguments(cfg.trainer, {**hardware_args, "metric_for_best_model": best, "greater_is_better": greater_is_better(best), "run_name": run_dir.name}, run_dir)
    callbacks = instantiate_callbacks(cfg.callbacks)  # after training_arguments: the TensorBoard one reads where to write
    tokenizer = source.load_tokenizer()
    task.check_max_length(tokenizer, source.name_or_path)
    started = time.perf_counter()
    with args.main_process_first(desc="tokenization"):  # other ranks then read rank 0's cache
        encoded = task.tokenize(splits, tokenizer, hardware.tokenizer_processes(len(splits["train"])))
    log.info("Tokenized in %.1f s (cached by datasets: a rerun on the same data and tokenizer skips it)", time.perf_counter() - started)

    set_seed(cfg.seed)  # before the classification head is initialised
    model = source.load_model(kind.model_config(), tokenizer)
    kind.prepare_model(model)
    model = adapter.wrap(model)  # LoRA: adapters on the encoder, the head trained in full
    hardware.prepare_model(model)  # after wrap: LoRA's dropouts too
    parameters = parameter_counts(model)
    trainer = build_trainer(args, model, tokenizer, encoded["train"], encoded["validation"], kind, callbacks, hardware.padding_multiple)
    use_run_trackers(trainer, cfg)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.state.global_step == 0:  # an untrained model is no result: write no model, metrics or card
        raise FinetuneError(
            f"The run trained no step (trainer.num_train_epochs={args.num_train_epochs}, trainer.max_steps={args.max_steps}, "
            f"{len(encoded['train'])} train rows), so nothing was saved: raise trainer.num_train_epochs or trainer.max_steps."
        )
    if trainer.stop.signum is not None:
        raise StoppedBySignal(
            f"Stopped by {signal.Signals(trainer.stop.signum).name} at step {trainer.state.global_step}; checkpoint saved in "
            f"{run_dir / 'checkpoints'}. Continue with: python run.py resume={run_dir}",
            trainer.stop.signum,
        )
    adapter.finish(trainer, run_dir / "adapter")  # LoRA: adapter/ saved, then merged: from here on a plain model

    # The best model on every labeled split after train. From here on the kind scores the
    # predictions itself, with what it calibrated on validation (multi-label thresholds).
    trainer.compute_metrics = None
    # Row i of each output is row i of the split (TaskTrainer.predict restores the order): saved per example below.
    outputs = {split: trainer.predict(encoded[split], metric_key_prefix=split) for split in encoded if split != "train" and task.is_labeled(encoded[split])}
    logits = {split: logits_of(output.predictions) for split, output in outputs.items()}
    kind.calibrate(outputs["validation"].label_ids, logits["validation"])
    metrics: Dict[str, Any] = {"validation": None, "test": None, **{split: None for split in encoded if split != "train"}}
    for split, output in outputs.items():
        metrics[split] = {"loss": output.metrics[f"{split}_loss"], **kind.report(output.label_ids, logits[split])}
        if split != "validation":  # into TensorBoard (validation was logged at each evaluation)
            trainer.log({f"{split.replace('validation', 'eval', 1)}_{k}": v for k, v in metrics[split].items() if isinstance(v, float)})
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
        "parameters": parameters,
        "batch_size": trainer.state.train_batch_size,  # per step and process: trainer.auto_find_batch_size may lower it
        "early_stopping": early_stopping_report(trainer),
    }

    if trainer.is_world_process_zero():
        # Unlabeled test splits (GLUE withholds the labels): predict and write submission files.
        # The Predictor keeps input order (the Trainer's length-grouped evaluation does not).
        predictor = Predictor(trainer.model, tokenizer, kind=kind, max_length=task.max_length, precision=hardware.precision_used)
        for split in (s for s in encoded if s.startswith("test") and not task.is_labeled(encoded[s])):
            columns = splits[split].select_columns(list(task.text_fields))[:]
            texts = [columns[f] for f in task.text_fields]
            predicted = kind.predict(predictor.scores(texts[0] if len(texts) == 1 else list(zip(*texts))))
            path = task.predictions_path(run_dir, split)
            task.write_predictions(path, predicted)
            log.info("The %s split is unlabeled: wrote %d predictions to %s", split, len(predicted), path)

        names = _choices()
        title = f"{names.get('model', Path(cfg.model.name_or_path).name)} on {names.get('task', cfg.task.path or 'local data')}"
        truth = {split: output.label_ids for split, output in outputs.items()}
        write_figures(run_dir, run_dir / "logs", kind, metrics, truth, logits, title, trainer.state.global_step)
        mistakes = write_examples(run_dir, kind, splits, truth, logits, task.text_fields)
        settings = hyperparameters(cfg, trainer.args, metrics, hardware.precision_used)
        card = model_card(cfg, kind, metrics, settings, run_dir.name, names.get("task"), confusion_lines(kind, mistakes))
        save_model(trainer, run_dir / "model", card, kind.model_files())
        write_json(run_dir / "metrics.json", metrics)
        log_hparams(run_dir / "logs", cfg, names, metrics)
        finish_trackers(trainer, metrics, {"metrics": run_dir / "metrics.json", "model card": run_dir / "model" / "README.md"})
    log.info(console_summary(kind, metrics, run_dir, run_dir / "logs"))

    if task.examples and trainer.is_world_process_zero():
        saved = Predictor.load(run_dir / "model", device=str(trainer.args.device), max_length=task.max_length)
        log.info("Examples:")
        for example, output in zip(task.examples, saved([e if isinstance(e, str) else tuple(e) for e in task.examples])):
            log.info("  %s\n    %s", example, rounded(output))
    return metrics


def _choices() -> Dict[str, str]:
    """The presets this run was composed from (task, model, ...), when Hydra composed it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {group: str(choices[group]) for group in ("task", "model", "trainer", "hardware", "peft") if group in choices}
