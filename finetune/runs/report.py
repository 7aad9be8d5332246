"""What a finished run leaves behind to explain itself: its pictures (the kind draws them), the
environment it ran in, a model card, and the console summary."""

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from omegaconf import DictConfig

from finetune.files import replaced_atomically
from finetune.markdown import markdown_table
from finetune.runs.model_folder import base_model_license, license_lines
from finetune.runs.saved import SavedRun


def write_figures(
    run_dir: Path,
    log_dir: Path,
    kind,
    metrics: Mapping[str, Any],
    truth: Mapping[str, Any],
    logits: Mapping[str, Any],
    title: str,
    step: int,
    raw_logits: Optional[Mapping[str, Any]] = None,
) -> None:
    """Each scored split's pictures as ``<name>_<split>.png`` and in TensorBoard: confusion matrix, per-label F1 or
    scatter plot; with probabilities, the reliability diagram (``raw_logits``: before calibration) and the
    risk-coverage curve."""
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for split in truth:
            report = metrics[split]
            scores = ", ".join(f"{name} {report[name]:.4f}" for name in kind.metrics)
            heading = f"{title}\n{split}: {report['rows']} rows, {scores}"
            figures = [kind.figure(report, truth[split], logits[split], heading)]
            figures += kind.calibration_figures(truth[split], (raw_logits or logits)[split], logits[split], heading)
            for name, figure in figures:
                with replaced_atomically(SavedRun(run_dir).figure_path(name, split)) as tmp:
                    figure.savefig(tmp, format="png")
                writer.add_figure(f"{name}/{split}", figure, global_step=step, close=True)
                plt.close(figure)


def _scored_splits(metrics: Mapping[str, Any]) -> List[str]:
    """The splits with labels, in order: validation first, then the others that were scored."""
    return [split for split, report in metrics.items() if split != "train" and report]


def _score_rows(kind, metrics: Mapping[str, Any]) -> List[List[Any]]:
    return [
        [split, *(metrics[split][m] for m in kind.metrics), metrics[split]["loss"], metrics[split]["rows"]]
        for split in _scored_splits(metrics)
    ]


def _per_class_rows(report: Mapping[str, Any]) -> Tuple[List[str], List[List[Any]]]:
    """The per-class (per-label) table of a split, with whatever columns the kind gave it."""
    per_class = report.get("per_class") or {}
    columns = list(next(iter(per_class.values()), {}))
    return columns, [[name, *(c[k] for k in columns)] for name, c in per_class.items()]


def calibration_lines(metrics: Mapping[str, Any]) -> List[str]:
    """The calibration table (ECE, NLL, Brier before -> after) and each split's risk-coverage, as markdown lines."""
    fitted = ((metrics.get("validation") or {}).get("calibration") or {}).get("fitted") or {}
    scored = [split for split in _scored_splits(metrics) if metrics[split].get("calibration")]
    if not scored:
        return []
    if "temperature" in fitted:
        how = f"one temperature T = {fitted['temperature']:.3f}" + (
            f" ({fitted['note']})" if fitted.get("note") else ""
        )
    elif "shared_temperature" in fitted:
        how = (
            f"a temperature per label (shared T = {fitted['shared_temperature']:.3f} "
            "for labels with few validation positives)"
        )
    else:
        how = f"none ({fitted.get('note') or 'task.calibration=none'})"
    binning = metrics[scored[0]]["calibration"]["binning"]
    rows = [
        [
            split,
            *(
                f"{metrics[split]['calibration']['before'][m]:.4f} -> {metrics[split]['calibration']['after'][m]:.4f}"
                for m in ("ece", "nll", "brier")
            ),
        ]
        for split in scored
    ]
    lines = [
        (
            f"Calibration fitted on validation: {how}, folded into the last layer. ECE over {binning}."
            if fitted.get("method", "none") != "none"
            else f"Calibration: {how}. ECE over {binning}."
        ),
        "",
        *markdown_table(["split", "ECE", "NLL", "Brier"], rows),
    ]
    for split in (s for s in scored if metrics[s].get("risk_coverage")):
        table = metrics[split]["risk_coverage"]
        lines += [
            "",
            f"Risk-coverage ({split}): accuracy on the rows answered, surest first.",
            "",
            *markdown_table(
                ["coverage", "rows", "accuracy", "min confidence"],
                [[f"{r['coverage']:.0%}", r["rows"], r["accuracy"], r["min_confidence"]] for r in table],
            ),
        ]
    return lines


def model_card(
    cfg: DictConfig,
    kind,
    metrics: Mapping[str, Any],
    hyperparameters: Mapping[str, Any],
    run_name: str,
    task_name: Optional[str],
    errors: Sequence[str] = (),
    examples: Sequence[Any] = (),
    data_lines: Sequence[str] = (),
) -> str:
    """A Hugging Face model card: YAML front matter (base model, task, data set, results), then prose and tables."""
    from huggingface_hub import ModelCard

    source = cfg.model.name_or_path
    local_model = Path(source).expanduser().is_dir()
    base_model = cfg.model.get("base_model") or (None if local_model else source)
    dataset = cfg.task.path if not cfg.task.data_files.get("train") else None  # a hub data set; local files have no id
    license = base_model_license(source, base_model)
    data = _card_data(kind, metrics, run_name, base_model, dataset, task_name)
    data.license, data.license_name, data.license_link = (
        license.get(k) for k in ("license", "license_name", "license_link")
    )
    base = (
        f"[{base_model}](https://huggingface.co/{base_model})"
        if base_model
        else f"A local model folder (`{Path(source).name}`)"
    )
    data_text = (
        f"[{dataset}](https://huggingface.co/datasets/{dataset})"
        if dataset
        else f"the local data files of task `{task_name or 'task'}`"
    )
    intro = (
        f"{base} fine-tuned for {kind.description.format(n=kind.num_labels)} on {data_text}, "
        "with finetune (Hydra + the transformers `Trainer`)."
    )
    body = _card_results(kind, metrics, run_name, intro)
    if data_lines:
        body += ["", "## Data", "", *data_lines]
    calibration = calibration_lines(metrics)
    if calibration:
        body += ["", "## Calibration", "", *calibration]
    if errors:  # the top confusions, and the file with every mistake
        body += ["", "## Errors", "", *errors]
    body += _long_text_lines(metrics["train"], cfg.task.max_length)
    body += _card_closing_sections(kind, examples, hyperparameters)
    body += ["## License", "", *license_lines(license), ""]
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(body)).content


def _card_data(
    kind,
    metrics: Mapping[str, Any],
    run_name: str,
    base_model: Optional[str],
    dataset: Optional[str],
    task_name: Optional[str],
):
    """The model card's YAML front matter: base model, data set, and a result per scored split and metric."""
    from huggingface_hub import EvalResult, ModelCardData

    dataset_name = dataset or f"{task_name or 'task'} (local files)"
    results = [
        EvalResult(
            task_type="text-classification",
            dataset_type=dataset or "local",
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=metric,
            metric_name=metric,
            metric_value=round(metrics[split][metric], 4),
        )
        for split in _scored_splits(metrics)
        for metric in kind.metrics
    ]
    return ModelCardData(
        base_model=base_model,
        datasets=[dataset] if dataset else None,
        library_name="transformers",
        pipeline_tag="text-classification",
        metrics=list(kind.metrics),
        model_name=run_name,
        eval_results=results or None,
        tags=["text-classification", kind.name.replace("_", "-"), "finetune"],
    )


def _card_results(kind, metrics: Mapping[str, Any], run_name: str, intro: str) -> List[str]:
    """The model card's title, first sentence and Results: the scores per split, then per label on validation."""
    body = [
        f"# {run_name}",
        "",
        intro,
        "",
        "## Results",
        "",
        *markdown_table(["split", *kind.metrics, "loss", "rows"], _score_rows(kind, metrics)),
    ]
    verdict = metrics["train"].get("baseline_check")
    if verdict is not None:
        body += ["", f"**{verdict['message']}**" if not verdict["learned"] else _baseline_line(verdict)]
    columns, rows = _per_class_rows(metrics.get("validation") or {})
    if rows:
        body += ["", "Per label (validation):", "", *markdown_table(["label", *columns], rows)]
    return body


def _baseline_line(verdict: Mapping[str, Any]) -> str:
    return (
        f"Above the trivial baseline: {verdict['split']} {verdict['metric']} {verdict['model']:.4f} against "
        f"{verdict['baseline']:.4f} for {verdict['baseline_is']} ({verdict['rows']} rows)."
    )


def _card_closing_sections(kind, examples: Sequence[Any], hyperparameters: Mapping[str, Any]) -> List[str]:
    """The model card's Labels (id and name), Usage (a pipeline called on the task's first example) and Training."""
    example = examples[0] if examples else "Some text to classify."
    example_code = (
        repr(example) if isinstance(example, str) else f"{{'text': {example[0]!r}, 'text_pair': {example[1]!r}}}"
    )
    return [
        "",
        "## Labels",
        "",
        *markdown_table(["id", "label"], list(enumerate(kind.label_names))),
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'classify = pipeline("text-classification", model="path/to/this/folder", top_k=None)',
        f"classify({example_code})",
        "```",
        "",
        '`finetune.Predictor.load("path/to/this/folder")` gives the task\'s own output '
        "(for multi-label: the labels above their thresholds).",
        "",
        "## Training",
        "",
        *markdown_table(
            ["hyperparameter", "value"],
            [[k, f"{v:g}" if isinstance(v, float) else v] for k, v in hyperparameters.items()],
        ),
        "",
    ]


def _long_text_lines(train: Mapping[str, Any], max_length: int) -> List[str]:
    """The model card's "Long texts": how many rows were longer than the window, and how the model read them."""
    lengths = train.get("token_lengths") or {}
    if not lengths:
        return []
    reading = train.get("long_text") or {"strategy": "truncate"}
    how = {
        "truncate": f"cut after their first {max_length} tokens",
        "head_tail": f"read as their first and last tokens ({max_length} in all; "
        "`task.long_text.head_tokens` from the start)",
        "chunks": f"read as windows of {max_length} tokens whose scores are aggregated per text "
        f"({reading.get('aggregation')})",
    }[reading["strategy"]]
    rows = [
        [split, f"{s['median_tokens']:.0f}", f"{s['p90_tokens']:.0f}", f"{100 * s['share_over_max_length']:.1f}%"]
        for split, s in lengths.items()
    ]
    return [
        "",
        "## Long texts",
        "",
        f"Texts longer than {max_length} tokens were {how} (`task.long_text.strategy={reading['strategy']}`). "
        "`finetune.Predictor` and `finetune.predict` read them the same way; "
        "a plain `pipeline` on this folder truncates them.",
        "",
        *markdown_table(["split", "median tokens", "90th percentile", f"longer than {max_length}"], rows),
    ]


def hyperparameters(
    cfg: DictConfig, args, metrics: Mapping[str, Any], precision: str, method: str, head: str = "fresh"
) -> Dict[str, Any]:
    """What the model card lists under Training: the settings that shape the result (``method``: how it fine-tuned)."""
    train = metrics["train"]
    weights = train.get("class_weights")
    parameters = train.get("parameters") or {}
    return {
        "fine-tuning": method,
        "head": head,
        "trainable parameters": f"{parameters['trainable']:,} of {parameters['total']:,}" if parameters else "n/a",
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
        "class weights": "none"
        if weights is None
        else f"{cfg.task.class_weights if isinstance(cfg.task.class_weights, str) else 'given'}: "
        + ", ".join(f"{w:.3g}" for w in weights),
    }


def console_summary(kind, metrics: Mapping[str, Any], run_dir: Path, log_dir: Path) -> str:
    """The end-of-run summary: scores per split, per class, training figures, and where to look."""
    scored = _scored_splits(metrics)
    names = [name for split in scored for name in (metrics[split].get("per_class") or {})]
    width = max([len("validation")] + [len(s) for s in scored] + [len(n) for n in names])
    header = ["split".ljust(width), *(f"{m:>9}" for m in kind.metrics), f"{'loss':>9}", f"{'rows':>7}"]
    lines = ["", "Run summary", "", "  " + "  ".join(header)]
    for split, *scores, count in _score_rows(kind, metrics):
        lines.append("  " + "  ".join([split.ljust(width), *(f"{v:>9.4f}" for v in scores), f"{count:>7}"]))
    for split in scored:
        columns, rows = _per_class_rows(metrics[split])
        if rows:
            lines += [
                "",
                f"  {split + ', per class:'}",
                "  " + "  ".join(["label".ljust(width), *(f"{c:>9}" for c in columns)]),
            ]
            for name, *values in rows:
                lines.append(
                    "  "
                    + "  ".join(
                        [name.ljust(width), *(f"{v:>9.4f}" if isinstance(v, float) else f"{v:>9}" for v in values)]
                    )
                )
    calibration = calibration_lines(metrics)
    if calibration:
        lines += ["", *("  " + line for line in calibration if line)]
    train = metrics["train"]
    lines += [
        "",
        f"  trained {train['epochs']:g} epoch{'' if train['epochs'] == 1 else 's'}, {train['steps']} steps, "
        f"{train['samples']} rows in {train['runtime_s']:.1f} s "
        f"({train['samples_per_second']:.1f} samples/s, padding efficiency {train['padding_efficiency']:.2f})",
        f"  run folder   {run_dir}",
        f"  tensorboard  tensorboard --logdir {log_dir}",
    ]
    return "\n".join(lines)
