"""Experiment trackers named in ``trainer.report_to`` beside TensorBoard: MLflow and Weights & Biases.

The Trainer's own callbacks log the TrainingArguments and the training curves. Ours take their
place and add what a run is: its resolved config as flat parameters (``task.max_length``,
``peft.r``, ...; never an OmegaConf object, and no value beyond the tracker's length limit), and,
once the run has finished, its final scores, ``metrics.json`` and the model card. Both packages
are optional (``pip install -e ".[trackers]"``); imported only when a run trains.
"""

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping

from omegaconf import DictConfig, OmegaConf
from transformers.integrations import MLflowCallback, WandbCallback

from finetune.errors import FinetuneError, one_line

log = logging.getLogger(__name__)
TRUNCATED = "..."


def flat_params(cfg: DictConfig, max_length: int) -> Dict[str, str]:
    """The resolved config as ``{"task.max_length": "128", ...}``.

    Lists as JSON, values cut to ``max_length`` characters.
    """
    params: Dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict) and value:
            for child, item in value.items():
                walk(item, f"{key}.{child}" if key else str(child))
            return
        text = value if isinstance(value, str) else json.dumps(value)
        params[key] = text if len(text) <= max_length else text[: max_length - len(TRUNCATED)] + TRUNCATED

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return params


def final_scores(metrics: Mapping[str, Any]) -> Dict[str, float]:
    """The final numbers of each split (``test_accuracy``, ``train_samples_per_second``, ...), tables left out."""
    return {
        f"{split}_{name}": float(value)
        for split, report in metrics.items()
        if isinstance(report, dict)
        for name, value in report.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


class RunMLflow(MLflowCallback):
    """MLflow with the run's config as parameters; the MLflow run ends once the final scores are in."""

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.params = flat_params(cfg, self._MAX_PARAM_VAL_LENGTH)

    def setup(self, args, state, model):
        super().setup(args, state, model=None)  # the TrainingArguments; the model config is in the run's config already
        if state.is_world_process_zero:
            items = [(f"config.{k}", v) for k, v in self.params.items()]
            for start in range(0, len(items), self._MAX_PARAMS_TAGS_PER_BATCH):
                self._ml_flow.log_params(dict(items[start : start + self._MAX_PARAMS_TAGS_PER_BATCH]))

    def on_train_end(self, args, state, control, **kwargs):
        """Kept open: the scores on test and the model card come after training."""

    def finish(self, metrics: Mapping[str, Any], files: Mapping[str, Path]) -> None:
        if not self._initialized or self._ml_flow.active_run() is None:
            return
        self._ml_flow.log_metrics({f"final/{k}": v for k, v in final_scores(metrics).items()})
        for path in files.values():
            self._ml_flow.log_artifact(str(path))
        if self._auto_end_run:
            self._ml_flow.end_run()


class RunWandb(WandbCallback):
    """Weights & Biases with the run's config; the final scores go into the run summary, the files into the run."""

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.params = flat_params(cfg, max_length=10_000)

    def setup(self, args, state, model, **kwargs):
        super().setup(args, state, model, **kwargs)
        if state.is_world_process_zero and self._wandb.run is not None:
            self._wandb.config.update({f"config.{k}": v for k, v in self.params.items()}, allow_val_change=True)

    def finish(self, metrics: Mapping[str, Any], files: Mapping[str, Path]) -> None:
        run = self._wandb.run
        if not self._initialized or run is None:
            return
        run.summary.update({f"final/{k}": v for k, v in final_scores(metrics).items()})
        for path in files.values():
            run.save(str(path), base_path=str(path.parent), policy="now")
        run.finish()


TRACKERS = {MLflowCallback: RunMLflow, WandbCallback: RunWandb}


PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}  # trainer.report_to name -> the package it needs


def check_trackers(report_to: List[str]) -> None:
    """Stop before any work when a tracker ``trainer.report_to`` names cannot run: its package is missing,
    or MLflow refuses its store (MLflow 3 refuses a plain folder). The Trainer would find out only
    once training begins, in a long traceback."""
    for name in report_to:
        if name in PACKAGES and importlib.util.find_spec(PACKAGES[name]) is None:
            raise FinetuneError(
                f'trainer.report_to names {name}, which is not installed: pip install -e ".[trackers]" '
                f"(or pip install {PACKAGES[name]}), "
                f"or leave {name} out of trainer.report_to."
            )
    if "mlflow" in report_to or ("all" in report_to and importlib.util.find_spec("mlflow")):
        from mlflow.tracking._tracking_service.utils import _get_store

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            _get_store(uri)  # the store the MLflow callback will use, built as MLflow builds it
        except Exception as error:
            reason = one_line(str(error)).split(". ", 1)[0]
            where = f"MLFLOW_TRACKING_URI={uri}" if uri else "its default store (MLFLOW_TRACKING_URI is not set)"
            raise FinetuneError(
                f"trainer.report_to names mlflow, but MLflow refuses {where}: {reason}. Use a database store, "
                "e.g. MLFLOW_TRACKING_URI=sqlite:///mlflow.db, or leave mlflow out of trainer.report_to."
            ) from error


def use_run_trackers(trainer, cfg: DictConfig) -> None:
    """Put ours in place of the Trainer's MLflow and W&B callbacks (present when ``trainer.report_to`` names them)."""
    for theirs, ours in TRACKERS.items():
        found = next((c for c in trainer.callback_handler.callbacks if type(c) is theirs), None)
        if found is not None:
            trainer.callback_handler.remove_callback(found)
            trainer.add_callback(ours(cfg))


def finish_trackers(trainer, metrics: Mapping[str, Any], files: Mapping[str, Path]) -> None:
    """Log the final scores and ``files`` (metrics.json, the model card) to each tracker, and close its run."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, tuple(TRACKERS.values())):
            callback.finish(metrics, files)
