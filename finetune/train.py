"""One fine-tuning run, start to finish: config in, run folder out."""

import logging
import signal
import time
from pathlib import Path
from typing import Any, Dict, List

from omegaconf import DictConfig

from finetune.config import FinetuneError, validate
from finetune.data import LABEL
from finetune.distributed import rank
from finetune.files import replaced_atomically, write_json
from finetune.hub import go_offline_if_unreachable
from finetune.resume import latest_checkpoint

log = logging.getLogger(__name__)


def save_model(trainer, path: Path, model_card: str) -> None:
    """Save model, tokenizer and model card so that ``path`` is either complete or absent."""
    with replaced_atomically(path) as tmp:
        trainer.save_model(str(tmp))
        (tmp / "README.md").write_text(model_card, encoding="utf-8")


def run(cfg: DictConfig, run_dir: Path) -> Dict[str, Any]:
    """Fine-tune ``cfg.model`` on ``cfg.task``; write model/, logs/, metrics.json and the reports into ``run_dir``."""
    from hydra.utils import instantiate

    validate(cfg)  # config mistakes fail here, before heavy imports and downloads
    checkpoint = latest_checkpoint(run_dir, remove_incomplete=rank() == 0) if cfg.get("resume") else None
    task = instantiate(cfg.task, _convert_="object")
    source = instantiate(cfg.model, _convert_="object")
    hardware = instantiate(cfg.hardware, _convert_="object")
    source.check_folder()
    if (task.path and not task.data_files.train) or not source.is_local:
        go_offline_if_unreachable()

    # Data first: its errors (and, offline, a missing hub data set) surface before the slow imports.
    started = time.perf_counter()
    splits = task.load(seed=cfg.seed)
    log.info("%s\nLoaded and checked in %.1f s", task.summary(splits), time.perf_counter() - started)

    from transformers import pipeline, set_seed

    from finetune.predict import Predictor
    from finetune.report import class_scores, console_summary, data_fingerprint, environment, hyperparameters, model_card, write_confusion_matrices
    from finetune.trainer import StoppedBySignal, best_validation_metrics, build_trainer, log_hparams, mean_training_loss, predicted_ids, training_arguments, without_prefix

    hardware_args = hardware.resolve()
    log.info(hardware.describe())
    if rank() == 0:  # written now, so that a run that fails later still tells what it ran on
        env = environment(hardware.summary(), data_fingerprint(splits, [*task.text_fields, LABEL]))
        write_json(run_dir / "environment.json", {**env, "resumed_from": Path(checkpoint).name} if checkpoint else env)
    if checkpoint:
        log.info("Resuming from %s", checkpoint)
    args = training_arguments(cfg.trainer, hardware_args, run_dir)
    tokenizer = source.load_tokenizer()
    task.check_max_length(tokenizer, source.name_or_path)
    started = time.perf_counter()
    with args.main_process_first(desc="tokenization"):  # other ranks then read rank 0's cache
        encoded = task.tokenize(splits, tokenizer, hardware.tokenizer_processes(len(splits["train"])))
    log.info("Tokenized in %.1f s (cached by datasets: a rerun on the same data and tokenizer skips it)", time.perf_counter() - started)

    set_seed(cfg.seed)  # before the classification head is initialised
    model = source.load_model(task.label_names, tokenizer)
    trainer = build_trainer(args, model, tokenizer, encoded["train"], encoded["validation"])
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

    metrics: Dict[str, Any] = {
        "validation": best_validation_metrics(trainer),
        "test": None,
        "train": {
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
        },
    }
    outputs = {"validation": trainer.predict(encoded["validation"])}  # the best model's predictions, for per-class scores
    if "test" in encoded:
        if task.is_labeled(encoded["test"]):
            outputs["test"] = trainer.predict(encoded["test"], metric_key_prefix="test")
            trainer.log(outputs["test"].metrics)  # into TensorBoard, as evaluate() does
            metrics["test"] = without_prefix(outputs["test"].metrics, "test")
        elif trainer.is_world_process_zero():  # e.g. GLUE: labels are withheld, so predict and write a submission file
            # The Predictor keeps input order (the Trainer's length-grouped evaluation does not).
            predictor = Predictor(trainer.model, tokenizer, max_length=task.max_length, precision=hardware.precision_used)
            columns = splits["test"].select_columns(list(task.text_fields))[:]
            texts = [columns[f] for f in task.text_fields]
            predicted = predictor.probabilities(texts[0] if len(texts) == 1 else list(zip(*texts))).argmax(axis=-1)
            task.write_predictions(run_dir / task.predictions_file, predicted.tolist())
            log.info("Test split is unlabeled: wrote %d predictions to %s", len(predicted), run_dir / task.predictions_file)
    for split, output in outputs.items():
        metrics[split].update(class_scores(output.label_ids, predicted_ids(output.predictions), task.label_names))

    if trainer.is_world_process_zero():
        names = _choices()
        title = f"{names.get('model', Path(cfg.model.name_or_path).name)} on {names.get('task', cfg.task.path or 'local data')}"
        write_confusion_matrices(run_dir, run_dir / "logs", {s: metrics[s] for s in outputs}, task.label_names, title, trainer.state.global_step)
        settings = hyperparameters(cfg, trainer.args, metrics, hardware.precision_used)
        card = model_card(cfg, metrics, task.label_names, settings, run_dir.name, names.get("task"))
        save_model(trainer, run_dir / "model", card)
        write_json(run_dir / "metrics.json", metrics)
        log_hparams(run_dir / "logs", cfg, names, metrics)
    log.info(console_summary(metrics, run_dir, run_dir / "logs"))

    if task.examples and trainer.is_world_process_zero():
        classify = pipeline("text-classification", model=str(run_dir / "model"), top_k=None, device=trainer.args.device)
        log.info("Examples, best label first:")
        for example, scores in zip(task.examples, classify(_pipeline_inputs(task.examples))):
            log.info("  %s\n    %s", example, [{"label": s["label"], "score": round(s["score"], 3)} for s in scores])
    return metrics


def _choices() -> Dict[str, str]:
    """The presets this run was composed from (task, model, ...), when Hydra composed it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {group: str(choices[group]) for group in ("task", "model", "trainer", "hardware") if group in choices}


def _pipeline_inputs(examples: List[Any]) -> List[Any]:
    return [e if isinstance(e, str) else {"text": e[0], "text_pair": e[1]} for e in examples]

