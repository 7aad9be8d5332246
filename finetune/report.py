"""What a finished run leaves behind to explain itself: per-class scores and confusion matrices,
the environment it ran in, a model card, and the console summary."""

import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from omegaconf import DictConfig

from finetune.files import replaced_atomically

PACKAGES = ("torch", "transformers", "accelerate", "datasets", "tokenizers", "scikit-learn", "hydra-core", "omegaconf", "finetune")


def class_scores(truth: Sequence[int], predicted: Sequence[int], labels: List[str]) -> Dict[str, Any]:
    """Per-class precision / recall / F1 / support and the confusion matrix (rows: true, columns: predicted)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    indices = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=indices, zero_division=0)
    return {
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": {"labels": labels, "rows_true_columns_predicted": confusion_matrix(truth, predicted, labels=indices).tolist()},
    }


def confusion_figure(matrix: List[List[int]], labels: List[str], title: str):
    """A labelled confusion matrix with counts in the cells, drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed (servers, clusters)
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.5, 0.7 * len(labels) + 2.5)
    figure, axes = plt.subplots(figsize=(size + 0.8, size), dpi=120)
    display = ConfusionMatrixDisplay(np.array(matrix), display_labels=labels)
    display.plot(ax=axes, cmap="Blues", values_format="d", colorbar=True, xticks_rotation=30 if len(labels) > 3 else 0)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("Predicted label")
    axes.set_ylabel("True label")
    figure.tight_layout()
    return figure


def write_confusion_matrices(run_dir: Path, log_dir: Path, reports: Mapping[str, Mapping[str, Any]], labels: List[str], title: str, step: int) -> None:
    """``confusion_<split>.png`` in the run folder and the same image in TensorBoard, per split."""
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for split, report in reports.items():
            matrix = report["confusion_matrix"]["rows_true_columns_predicted"]
            rows = sum(map(sum, matrix))
            figure = confusion_figure(matrix, labels, f"{title}\n{split}: {rows} rows, accuracy {report['accuracy']:.4f}, macro F1 {report['f1']:.4f}")
            path = run_dir / f"confusion_{split}.png"
            with replaced_atomically(path) as tmp:
                figure.savefig(tmp, format="png")
            writer.add_figure(f"confusion_matrix/{split}", figure, global_step=step, close=True)
            plt.close(figure)


def data_fingerprint(splits, columns: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Rows and a SHA-256 of the text and label columns of each split, as trained and evaluated on."""
    fingerprint = {}
    for name, split in splits.items():
        digest = hashlib.sha256()
        for batch in split.select_columns(list(columns)).iter(batch_size=10_000):
            for column in columns:
                digest.update("\x1f".join(map(str, batch[column])).encode("utf-8"))
                digest.update(b"\x1e")
        fingerprint[name] = {"rows": len(split), "sha256": digest.hexdigest()}
    return fingerprint


def code_version() -> Dict[str, Any]:
    """The git commit of this code and whether tracked files differ from it (None outside a checkout)."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> Optional[str]:
        try:
            result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def environment(hardware: Mapping[str, Any], data: Mapping[str, Any]) -> Dict[str, Any]:
    def version(package: str) -> Optional[str]:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {package: version(package) for package in PACKAGES},
        "hardware": dict(hardware),
        "code": code_version(),
        "command": " ".join(["python", Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": dict(data),
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def _scored_splits(metrics: Mapping[str, Any]) -> List[str]:
    """The splits with labels, in order: validation, and test unless it was predicted unlabeled."""
    return [split for split in ("validation", "test") if metrics.get(split) and "per_class" in metrics[split]]


def _score_rows(metrics: Mapping[str, Any]) -> List[List[Any]]:
    return [
        [split, metrics[split]["accuracy"], metrics[split]["f1"], metrics[split]["loss"], sum(c["support"] for c in metrics[split]["per_class"].values())]
        for split in _scored_splits(metrics)
    ]


def model_card(
    cfg: DictConfig, metrics: Mapping[str, Any], labels: List[str], hyperparameters: Mapping[str, Any], run_name: str, task_name: Optional[str]
) -> str:
    """A Hugging Face model card: YAML front matter (base model, task, data set, results), then prose and tables."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    source = cfg.model.name_or_path
    local_model = Path(source).expanduser().is_dir()
    base_model = cfg.model.get("base_model") or (None if local_model else source)
    dataset = cfg.task.path if not cfg.task.data_files.train else None  # a hub data set; local files have no id
    dataset_name = dataset or f"{task_name or 'task'} (local files)"
    results = [
        EvalResult(
            task_type="text-classification", dataset_type=dataset or "local", dataset_name=dataset_name, dataset_split=split,
            metric_type=metric, metric_name="macro F1" if metric == "f1" else metric, metric_value=round(metrics[split][metric], 4),
        )
        for split in _scored_splits(metrics)
        for metric in ("accuracy", "f1")
    ]
    data = ModelCardData(
        base_model=base_model, datasets=[dataset] if dataset else None, library_name="transformers",
        pipeline_tag="text-classification", metrics=["accuracy", "f1"], model_name=run_name, eval_results=results or None,
        tags=["text-classification", "finetune"],
    )
    base = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else f"A local model folder (`{Path(source).name}`)"
    data_text = f"[{dataset}](https://huggingface.co/datasets/{dataset})" if dataset else f"the local data files of task `{task_name or 'task'}`"
    example = cfg.task.examples[0] if cfg.task.examples else "Some text to classify."
    example_code = repr(example) if isinstance(example, str) else f"{{'text': {example[0]!r}, 'text_pair': {example[1]!r}}}"
    body = [
        f"# {run_name}",
        "",
        f"{base} fine-tuned for text classification on {data_text} ({len(labels)} classes), "
        "with finetune (Hydra + the transformers `Trainer`).",
        "",
        "## Results",
        "",
        *_table(["split", "accuracy", "macro F1", "loss", "rows"], _score_rows(metrics)),
    ]
    if "validation" in _scored_splits(metrics):
        per_class = metrics["validation"]["per_class"]
        body += ["", "Per class (validation):", ""]
        body += _table(["label", "precision", "recall", "F1", "support"], [[n, c["precision"], c["recall"], c["f1"], c["support"]] for n, c in per_class.items()])
    body += [
        "", "## Labels", "", *_table(["id", "label"], list(enumerate(labels))),
        "", "## Usage", "", "```python", "from transformers import pipeline", "",
        'classify = pipeline("text-classification", model="path/to/this/folder", top_k=None)',
        f"classify({example_code})", "```",
        "", "## Training", "", *_table(["hyperparameter", "value"], [[k, f"{v:g}" if isinstance(v, float) else v] for k, v in hyperparameters.items()]), "",
    ]
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(body)).content


def hyperparameters(cfg: DictConfig, args, metrics: Mapping[str, Any], precision: str) -> Dict[str, Any]:
    """What the model card lists under Training: the settings that shape the result."""
    train = metrics["train"]
    return {
        "learning rate": args.learning_rate,
        "batch size (per device)": args.per_device_train_batch_size,
        "gradient accumulation steps": args.gradient_accumulation_steps,
        "epochs": args.num_train_epochs,
        "scheduler": getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
        "warmup": args.warmup_steps,
        "weight decay": args.weight_decay,
        "max length": cfg.task.max_length,
        "precision": precision,
        "seed": cfg.seed,
        "training rows": train["samples"],
        "steps": train["steps"],
    }


def console_summary(metrics: Mapping[str, Any], run_dir: Path, log_dir: Path) -> str:
    """The end-of-run summary: scores per split, per class, training figures, and where to look."""
    scored = _scored_splits(metrics)
    width = max([len("validation")] + [len(name) for s in scored for name in metrics[s]["per_class"]])
    lines = ["", "Run summary", "", f"  {'split':<{width}}  {'accuracy':>9}  {'macro F1':>9}  {'loss':>9}  {'rows':>7}"]
    for split, accuracy, f1, loss, count in _score_rows(metrics):
        lines.append(f"  {split:<{width}}  {accuracy:>9.4f}  {f1:>9.4f}  {loss:>9.4f}  {count:>7}")
    for split in scored:
        lines += ["", f"  {split + ', per class:'}", f"  {'label':<{width}}  {'precision':>9}  {'recall':>9}  {'F1':>9}  {'support':>7}"]
        for name, c in metrics[split]["per_class"].items():
            lines.append(f"  {name:<{width}}  {c['precision']:>9.4f}  {c['recall']:>9.4f}  {c['f1']:>9.4f}  {c['support']:>7}")
    train = metrics["train"]
    lines += [
        "",
        f"  trained {train['epochs']:g} epoch{'' if train['epochs'] == 1 else 's'}, {train['steps']} steps, {train['samples']} rows in {train['runtime_s']:.1f} s "
        f"({train['samples_per_second']:.1f} samples/s, padding efficiency {train['padding_efficiency']:.2f})",
        f"  run folder   {run_dir}",
        f"  tensorboard  tensorboard --logdir {log_dir}",
    ]
    return "\n".join(lines)
