"""The saved run: the one module that knows what a run folder, a model folder and an export folder hold.

Vocabulary (the rest of the package uses these words in this sense):

- **run folder**: what one ``python run.py`` wrote, the record of how a model was made: its config
  (``.hydra/config.yaml``), log, checkpoints, ``metrics.json``, ``environment.json``, per-example
  predictions, pictures, and the model folder ``model/``. ``SavedRun`` reads and writes it.
- **model folder**: the weights, the tokenizer, the model card and ``finetune.json``, the model
  record: everything a consumer needs to answer with the model, so that a copy of ``model/`` alone
  predicts, exports and serves. The kind's own files (multi-label ``thresholds.json``, the
  calibration's ``calibration.json``) lie beside it.
- **export**: an ONNX copy of a model folder (``export/``): ``model.onnx``, the tokenizer,
  ``config.json``, the same model record and kind's files, and ``export.json`` (how it was made and checked).
- **model record**: ``ModelRecord``; ``ModelFolder.open`` reads it from any of the three folders, and
  builds it from the saved config for a run folder written before model records existed.

Every file name of these folders is written here, and nowhere else in the package.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from finetune.errors import FinetuneError
from finetune.files import write_json

HYDRA_DIR = ".hydra"  # Hydra's record of the run: config.yaml (the composed config), hydra.yaml, overrides.yaml
RUN_LOG = "run.log"
LOCK_FILE = ".lock"  # flock-ed while a process works in the folder (finetune/runs/folders.py)
METRICS_FILE = "metrics.json"  # written last: a run folder with it has finished
FAILED_FILE = "failed.json"  # a sweep job that failed: its error, read by the leaderboard
ENVIRONMENT_FILE = "environment.json"  # hardware, packages, code version and the data's fingerprints
DETECTED_FILE = "detected.json"  # the task settings read off the train file (task=file): the task as the run read it
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_STATE = "trainer_state.json"  # the Trainer writes it last: a checkpoint with it is complete
MODEL_DIR = "model"
LOGS_DIR = "logs"  # TensorBoard
ADAPTER_DIR = "adapter"  # LoRA: the adapter as trained, before it was merged into model/
EXPORT_DIR = "export"  # the run's default export folder
EXPORT_FILE = "export.json"  # marks an export folder: what it holds and how it was checked
RECORD_FILE = "finetune.json"  # the model record, in a model folder and an export folder
MODEL_CONFIG = "config.json"  # transformers' config: architecture, label names, problem_type
MODEL_CARD = "README.md"
ONNX_FILE = "model.onnx"
OUT_OF_FOLD_FILE = "out_of_fold.parquet"  # a k-fold job's out-of-fold predictions, for the sweep's label audit
# The task kind's files in a model folder, by the name the kind gives their content (TaskKind.model_files).
KIND_FILES = {"calibration": "calibration.json", "thresholds": "thresholds.json"}
# What a run leaves in its folder: Hydra writes .hydra/ and run.log before the run's first line.
RUN_FILES = (HYDRA_DIR, RUN_LOG, METRICS_FILE, FAILED_FILE, CHECKPOINTS_DIR, MODEL_DIR, LOGS_DIR, ENVIRONMENT_FILE)
# What a job leaves once it has run (a folder Hydra has just made holds only .hydra/ and run.log).
JOB_RESULTS = RUN_FILES[2:]
SWEEP_SUMMARY = "summary.csv"  # the leaderboard, written when a sweep ends (finetune/sweeps/leaderboard.py)
SWEEP_FILES = ("multirun.yaml", SWEEP_SUMMARY, "summary.md")


class SavedRun:
    """A run folder: where each of its files lies, and reading and writing them."""

    def __init__(self, folder: Union[str, Path]):
        self.folder = Path(folder).expanduser()

    def __repr__(self) -> str:
        return f"SavedRun({str(self.folder)!r})"

    # --- where things lie ---------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.folder / HYDRA_DIR / "config.yaml"

    @property
    def hydra_path(self) -> Path:
        return self.folder / HYDRA_DIR / "hydra.yaml"

    @property
    def overrides_path(self) -> Path:
        return self.folder / HYDRA_DIR / "overrides.yaml"

    @property
    def log_path(self) -> Path:
        return self.folder / RUN_LOG

    @property
    def lock_path(self) -> Path:
        return self.folder / LOCK_FILE

    @property
    def metrics_path(self) -> Path:
        return self.folder / METRICS_FILE

    @property
    def failed_path(self) -> Path:
        return self.folder / FAILED_FILE

    @property
    def environment_path(self) -> Path:
        return self.folder / ENVIRONMENT_FILE

    @property
    def detected_path(self) -> Path:
        return self.folder / DETECTED_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.folder / CHECKPOINTS_DIR

    @property
    def model_dir(self) -> Path:
        return self.folder / MODEL_DIR

    @property
    def logs_dir(self) -> Path:
        return self.folder / LOGS_DIR

    @property
    def adapter_dir(self) -> Path:
        return self.folder / ADAPTER_DIR

    @property
    def export_dir(self) -> Path:
        return self.folder / EXPORT_DIR

    @property
    def model_card_path(self) -> Path:
        return self.model_dir / MODEL_CARD

    @property
    def out_of_fold_path(self) -> Path:
        return self.folder / OUT_OF_FOLD_FILE

    def predictions_path(self, split: str) -> Path:
        """The best model's scores of each row of a scored split (``finetune.compare`` reads them)."""
        return self.folder / f"predictions_{split}.parquet"

    def mistakes_path(self, split: str) -> Path:
        return self.folder / f"misclassified_{split}.csv"

    def figure_path(self, name: str, split: str) -> Path:
        return self.folder / f"{name}_{split}.png"

    # --- state ----------------------------------------------------------------------------
    @property
    def has_config(self) -> bool:
        return self.config_path.is_file()

    @property
    def is_finished(self) -> bool:
        return self.metrics_path.is_file()

    def present(self, names=RUN_FILES) -> List[str]:
        """Which of ``names`` the folder holds."""
        return [name for name in names if (self.folder / name).exists()]

    # --- reading ------------------------------------------------------------------------------
    def config(self, typed: bool = True):
        """The config the run was started with, its moved class names (``_target_``) and renamed keys as the
        code now names them; ``typed``: merged onto the groups' schemas, as Hydra composed it."""
        from omegaconf import OmegaConf

        from finetune.config.schemas import current_names, with_schemas

        if not self.has_config:
            raise FinetuneError(f"{self.folder} is not a run folder: it has no {HYDRA_DIR}/config.yaml.")
        saved = OmegaConf.load(self.config_path)
        return with_schemas(saved) if typed else current_names(saved)

    def hydra(self):
        from omegaconf import OmegaConf

        return OmegaConf.load(self.hydra_path).hydra

    def overrides(self) -> List[str]:
        from omegaconf import OmegaConf

        return list(OmegaConf.load(self.overrides_path))

    def detected(self) -> Dict[str, Any]:
        """The task settings the run read off its train file (empty where it set them all)."""
        return read_json(self.detected_path) if self.detected_path.is_file() else {}

    def task(self):
        """The run's task config as the run read it: the saved ``task`` with the settings detected from its file."""
        from omegaconf import open_dict

        task = self.config().task
        with open_dict(task):
            for key, value in self.detected().items():
                task[key] = value
        return task

    def metrics(self) -> Dict[str, Any]:
        return read_json(self.metrics_path)

    def environment(self) -> Dict[str, Any]:
        return read_json(self.environment_path)

    def failure(self) -> Dict[str, Any]:
        return read_json(self.failed_path)

    # --- writing ------------------------------------------------------------------------------
    def write_metrics(self, metrics: Dict[str, Any]) -> None:
        write_json(self.metrics_path, metrics)

    def write_detected(self, detected: Dict[str, Any]) -> None:
        write_json(self.detected_path, detected)

    def record_detected(self, detected: Dict[str, Any], write: bool = True) -> None:
        """Keep the settings the task read off its train file; a resumed run that reads others is refused."""
        before = self.detected()
        if before and before != detected:
            changed = ", ".join(
                f"task.{k}: {before.get(k)!r} -> {v!r}" for k, v in detected.items() if before.get(k) != v
            )
            raise FinetuneError(
                f"The train file now gives other settings than when this run started ({changed}): start a new run, "
                "or set them as they were on the command line."
            )
        if write:
            self.write_detected(detected)

    def write_environment(self, environment: Dict[str, Any]) -> None:
        write_json(self.environment_path, environment)

    def write_failure(self, failure: Dict[str, Any]) -> None:
        write_json(self.failed_path, failure)


def read_json(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def hydra_output_subdir(resume: Any) -> Optional[str]:
    """Resolver for ``hydra.output_subdir``: where Hydra writes its record of the run, none when resuming (the
    folder keeps its original record). Only rank 0 of a torchrun launch writes the record: the ranks share one folder.
    """
    from finetune.distributed import rank

    return None if resume or rank() != 0 else HYDRA_DIR
