"""The model folder and its record: what a consumer needs to answer with a trained model, saved beside its weights
(``finetune.json``) so that a copy of ``model/`` alone predicts, exports and serves. The file names are
finetune/runs/saved.py's."""

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from finetune.errors import FinetuneError
from finetune.files import replaced_atomically
from finetune.runs.saved import (
    EXPORT_DIR,
    EXPORT_FILE,
    KIND_FILES,
    MODEL_CARD,
    MODEL_CONFIG,
    MODEL_DIR,
    ONNX_FILE,
    RECORD_FILE,
    SavedRun,
    read_json,
)


@dataclass
class ModelRecord:
    """What a consumer needs to answer with a model, besides its weights and the kind's files: ``finetune.json``.

    ``kind`` and ``labels`` repeat what transformers' config.json says (problem_type, id2label) for
    readers that do not load it; the rest is how the run's task read its texts and files.
    """

    kind: str
    labels: List[str]
    text_fields: List[str] = field(default_factory=lambda: ["text"])
    label_field: str = "label"
    max_length: Optional[int] = None  # the length the model was trained with; None: the tokenizer's, at most 512
    metrics: List[str] = field(default_factory=list)  # the task's metrics; empty: the kind's defaults
    label_separator: str = ","
    column_names: Optional[List[str]] = None  # how the task's files were read: header-less files' columns
    quoted: Optional[bool] = False  # TSV: CSV-quoted; None: detected from the file
    rename_columns: Dict[str, str] = field(default_factory=dict)
    long_text: Dict[str, Any] = field(default_factory=dict)  # task.long_text; empty: truncated
    format: int = 1  # of this record

    @property
    def pairs(self) -> bool:
        return len(self.text_fields) == 2

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, values: Dict[str, Any]) -> "ModelRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def of_task(cls, task: Any, kind: Any) -> "ModelRecord":
        """The record of a run's task (``cfg.task``, or the task object) and its kind."""
        from omegaconf import OmegaConf

        def plain(value: Any) -> Any:
            return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value

        long_text = plain(getattr(task, "long_text", None) or {})
        return cls(
            kind=kind.name,
            labels=list(kind.label_names),
            text_fields=list(task.text_fields),
            label_field=task.label_field,
            max_length=task.max_length,
            metrics=list(plain(task.metrics) or []),
            label_separator=task.label_separator,
            column_names=plain(task.column_names),
            quoted=task.quoted,
            rename_columns=dict(plain(task.rename_columns) or {}),
            long_text=long_text if isinstance(long_text, dict) else long_text.as_dict(),
        )


def base_model_license(source: str, base_model: Optional[str] = None) -> Dict[str, str]:
    """The base model's license, as its model card's front matter (``license:``, and ``license_name`` /
    ``license_link`` for ``other``) or its config says it, with ``found_in``; empty where neither says it.

    ``source`` is the model's folder or hub id; ``base_model`` its hub id where ``source`` is a local copy. A hub
    model's files are read from the local cache, or fetched when the Hub is reachable.
    """
    folder = Path(source).expanduser()
    hub_ids = [base_model] if base_model else []
    hub_ids += [] if folder.is_dir() or source in hub_ids else [source]
    places = [lambda name: folder / name] if folder.is_dir() else []
    places += [lambda name, repo=repo: _hub_file(repo, name) for repo in hub_ids]
    for place in places:
        card = _front_matter(place(MODEL_CARD))
        if card.get("license"):
            keys = ("license", "license_name", "license_link")
            return {**{k: str(card[k]) for k in keys if card.get(k)}, "found_in": "its model card"}
        config = place(MODEL_CONFIG)
        license = read_json(config).get("license") if config and config.is_file() else None
        if isinstance(license, str) and license.strip():
            return {"license": license.strip(), "found_in": "its config"}
    return {}


def _front_matter(card: Optional[Path]) -> Dict[str, Any]:
    from huggingface_hub.repocard import metadata_load

    if card is None or not card.is_file():
        return {}
    try:
        return metadata_load(card) or {}
    except Exception:  # a card whose front matter is not YAML names no license we can read
        return {}


def _hub_file(repo_id: str, name: str) -> Optional[Path]:
    """A file of a hub model: from the cache, else fetched (online); None where it cannot be had."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from finetune.hub import offline

    try:
        cached = try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str):
            return Path(cached)
        return None if offline() else Path(hf_hub_download(repo_id, name, etag_timeout=5))
    except Exception:  # not a hub id, no such file, the Hub unreachable: the license stays for the user to fill in
        return None


def license_lines(license: Dict[str, str]) -> List[str]:
    """The model card's License section: the base model's license, or that the user has to fill it in."""
    if not license:
        return [
            "The base model's license was not found: neither its model card nor its config names one. "
            "Fill in `license:` in the front matter above (the base model's license, or one its terms allow) "
            "before you share this model.",
        ]
    name = license.get("license_name") or license["license"]
    link = f" ({license['license_link']})" if license.get("license_link") else ""
    return [
        f"`{name}`{link}: the base model's license, as {license['found_in']} says it. "
        "A fine-tuned model derives from its base model, whose terms apply to it too.",
    ]


def write_model_files(folder: Path, record: ModelRecord, kind_files: Dict[str, Any]) -> None:
    """The model record and the kind's files (``TaskKind.model_files``), into a model or export folder."""
    (folder / RECORD_FILE).write_text(json.dumps(record.as_dict(), indent=2) + "\n", encoding="utf-8")
    for name, content in kind_files.items():
        (folder / KIND_FILES[name]).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def save_model(trainer: Any, folder: Path, model_card: str, record: ModelRecord, kind_files: Dict[str, Any]) -> None:
    """Save the Trainer's model and tokenizer, the model card, the record and the kind's files, so that
    ``folder`` is either complete or absent."""
    with replaced_atomically(folder) as tmp:
        trainer.save_model(str(tmp))
        (tmp / MODEL_CARD).write_text(model_card, encoding="utf-8")
        write_model_files(tmp, record, kind_files)


def write_export_files(source: "ModelFolder", target: Path, export_info: Dict[str, Any]) -> None:
    """What an export holds besides the ONNX graph and the tokenizer: transformers' config, the model record
    (also for a run folder written before records), the kind's files, and ``export.json``."""
    import shutil

    for name in (MODEL_CONFIG, *KIND_FILES.values()):
        if (source.model_dir / name).is_file():
            shutil.copy(source.model_dir / name, target / name)
    (target / RECORD_FILE).write_text(json.dumps(source.record.as_dict(), indent=2) + "\n", encoding="utf-8")
    write_export_info(target, export_info)


def write_export_info(folder: Path, export_info: Dict[str, Any]) -> None:
    (folder / EXPORT_FILE).write_text(json.dumps(export_info, indent=2, default=_plain) + "\n", encoding="utf-8")


def is_export(folder: Path) -> bool:
    return (folder / EXPORT_FILE).is_file()


def _plain(value: Any) -> Any:
    """numpy's numbers as JSON numbers; anything else as text."""
    return value.item() if hasattr(value, "item") else str(value)


@dataclass(frozen=True)
class ModelFolder:
    """A model to answer with, found from a run folder (its ``model/``), a model folder or an export folder."""

    path: Path  # as given
    model_dir: Path  # the folder holding the weights (or, for an export folder, model.onnx)
    record: ModelRecord
    described: bool  # the record was saved (or rebuilt from a run's config); False: a plain model folder's defaults
    export_dir: Optional[Path] = None  # the ONNX export: the folder itself, or the run's export/
    run: Optional[SavedRun] = None  # the run folder, when one was given

    @property
    def is_export(self) -> bool:
        return self.export_dir is not None and self.export_dir == self.model_dir

    @property
    def pairs(self) -> Optional[bool]:
        """Whether the model reads pairs; None for a plain model folder, which does not say."""
        return self.record.pairs if self.described else None

    @property
    def export_file(self) -> Optional[Path]:
        return self.export_dir / EXPORT_FILE if self.export_dir else None

    def model_config(self) -> Dict[str, Any]:
        """transformers' config.json of the model (its labels and problem_type)."""
        return read_json(self.model_dir / MODEL_CONFIG)

    def export_info(self) -> Dict[str, Any]:
        if self.export_dir is None:
            raise self.no_export()
        return read_json(self.export_dir / EXPORT_FILE)

    def no_export(self) -> FinetuneError:
        return FinetuneError(
            f"{self.path} has no ONNX export ({EXPORT_DIR}/{EXPORT_FILE}): "
            f"create one with python -m finetune.export {self.path}"
        )

    @property
    def onnx_file(self) -> Path:
        if self.export_dir is None:
            raise self.no_export()
        return self.export_dir / ONNX_FILE

    def kind_files(self) -> Dict[str, Any]:
        """The kind's files saved with the model, by file name (what ``/info`` shows)."""
        return {
            file: read_json(self.model_dir / file) for file in KIND_FILES.values() if (self.model_dir / file).is_file()
        }

    def calibration(self) -> Dict[str, Any]:
        """The temperatures folded into the model's last layer, or that it has none."""
        return self.kind_files().get(KIND_FILES["calibration"]) or {"method": "none"}

    def kind(self):
        """The task kind of the model: its labels, thresholds and metrics, read without loading the model."""
        from finetune.tasks.registry import kind_for_model

        thresholds = self.kind_files().get(KIND_FILES["thresholds"])
        return kind_for_model(
            self.model_config(),
            self.record.metrics,
            self.record.label_separator,
            thresholds["thresholds"] if thresholds else None,
        )

    @classmethod
    def open(cls, path: Union[str, Path]) -> "ModelFolder":
        """Open a run folder (its model/ and the record saved there, or its config), a model or an export folder."""
        path = Path(path).expanduser()
        if not path.is_dir():
            raise FinetuneError(f"No such folder: {path}")
        if (path / EXPORT_FILE).is_file():
            record, described = _export_record(path)
            return cls(path, path, record, described, export_dir=path)
        run = SavedRun(path) if (path / MODEL_DIR / MODEL_CONFIG).is_file() else None
        model_dir = run.model_dir if run else path
        if not (model_dir / MODEL_CONFIG).is_file():
            raise FinetuneError(
                f"{path} holds no model: expected a run folder with {MODEL_DIR}/, "
                f"or a folder with {MODEL_CONFIG} and weights."
            )
        record, described = _model_record(model_dir, run)
        export = run.export_dir if run and (run.export_dir / EXPORT_FILE).is_file() else None
        return cls(path, model_dir, record, described, export_dir=export, run=run)


def _labels(config: Dict[str, Any]) -> List[str]:
    id2label = config.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def _model_record(model_dir: Path, run: Optional[SavedRun]):
    """The record saved in ``model_dir``; for a run folder written before records, rebuilt from its config."""
    if (model_dir / RECORD_FILE).is_file():
        return ModelRecord.of(read_json(model_dir / RECORD_FILE)), True
    config = read_json(model_dir / MODEL_CONFIG)
    from finetune.tasks.registry import kind_name_for_model

    labels, kind = _labels(config), kind_name_for_model(config)
    if run is None or not run.has_config:
        return ModelRecord(kind, labels), False
    task = run.config(typed=False).task
    from finetune.tasks.windows import LongText

    return ModelRecord(
        kind=kind,
        labels=labels,
        text_fields=list(task.text_fields),
        label_field=task.label_field,
        max_length=task.max_length,
        metrics=list(task.get("metrics") or []),
        label_separator=task.get("label_separator", ","),
        column_names=task.get("column_names"),
        quoted=task.get("quoted", False),
        rename_columns=dict(task.get("rename_columns") or {}),
        long_text=LongText.of(task.get("long_text")).as_dict(),
    ), True


def _export_record(folder: Path):
    """An export folder's record; one written before records kept the task's settings in export.json."""
    if (folder / RECORD_FILE).is_file():
        return ModelRecord.of(read_json(folder / RECORD_FILE)), True
    config = read_json(folder / MODEL_CONFIG)
    from finetune.tasks.registry import kind_name_for_model

    task = read_json(folder / EXPORT_FILE).get("task") or {}
    return ModelRecord.of({**task, "kind": kind_name_for_model(config), "labels": _labels(config)}), True
