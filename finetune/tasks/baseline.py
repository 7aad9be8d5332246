"""Did the model learn? Every scored split's metric against a trivial baseline: what a model that read no text
scores (the majority class, each label's share, the training mean; the kind's ``baseline_logits``).

A model not clearly above it (by ``margin``: two standard errors of the baseline's score on the split's rows,
at least ``MIN_MARGIN``) is reported in one line with its likely causes, recorded in metrics.json, the model
card and the leaderboard: a run that learned nothing never looks like a success.
"""

import math
from typing import Any, Dict, Mapping, Optional, Tuple

from finetune.tasks.metrics import greater_is_better

MIN_MARGIN = 0.02  # for metrics in [0, 1]: a model must beat the baseline by at least this much
RELATIVE_MARGIN = 0.05  # for errors (mse): a model must be at least this much lower, relatively


def margin(baseline: float, rows: int, higher_is_better: bool) -> float:
    """How far above the baseline a score must be to count as learned, on ``rows`` rows."""
    if not higher_is_better:
        return RELATIVE_MARGIN * abs(baseline)
    share = min(max(baseline, 0.01), 0.99)
    return max(MIN_MARGIN, 2 * math.sqrt(share * (1 - share) / max(rows, 1)))


def baseline_scores(kind, train_labels, truth) -> Dict[str, float]:
    """The kind's metrics of the trivial baseline on a split (its labels ``truth``)."""
    report = kind.evaluate(truth, kind.baseline_logits(train_labels, len(truth)))
    return {name: (0.0 if isinstance(value, float) and math.isnan(value) else value) for name, value in report.items()}


def check(
    kind, metric: str, train_labels, scored: Mapping[str, Tuple[Any, Mapping[str, Any]]]
) -> Tuple[Dict[str, Dict[str, float]], Optional[Dict[str, Any]]]:
    """Per split, the baseline's scores; and the verdict on the largest scored split (``scored``: split ->
    (labels, its report)). None where there is nothing to judge."""
    metric = metric if metric != "loss" else kind.metrics[0]
    baselines = {split: baseline_scores(kind, train_labels, truth) for split, (truth, _) in scored.items()}
    if not scored:
        return baselines, None
    split = max(scored, key=lambda s: (len(scored[s][0]), s.startswith("test")))
    truth, report = scored[split]
    higher = greater_is_better(metric)
    model, baseline = float(report[metric]), float(baselines[split][metric])
    needed = margin(baseline, len(truth), higher)
    learned = model >= baseline + needed if higher else model <= baseline - needed
    verdict = {
        "split": split,
        "metric": metric,
        "model": model,
        "baseline": baseline,
        "baseline_is": kind.baseline,
        "margin": needed,
        "rows": int(len(truth)),
        "learned": bool(learned),
        # above the baseline, but by less than so few rows can tell from chance: more rows would tell
        "too_few_rows": bool(not learned and needed > 2 * MIN_MARGIN and (model > baseline) == higher),
    }
    return baselines, verdict


def verdict_line(verdict: Mapping[str, Any], steps: int, learning_rate: float) -> str:
    """The one line a run that did not learn prints (and its model card says)."""
    v = verdict
    if v.get("too_few_rows"):
        return (
            f"The model is not shown to have learned: {v['split']} {v['metric']} {v['model']:.4f} against "
            f"{v['baseline_is']}'s {v['baseline']:.4f}, a difference {v['rows']} rows cannot tell from chance "
            f"(it takes {v['margin']:.3f}). Score it on more rows: test_file=<file>, or a larger task.validation_size."
        )
    comparison = "not clearly above" if greater_is_better(v["metric"]) else "not clearly below"
    return (
        f"The model did not learn: {v['split']} {v['metric']} {v['model']:.4f} is {comparison} "
        f"{v['baseline_is']}'s {v['baseline']:.4f} (by {v['margin']:.3f} or more on {v['rows']} rows). "
        f"Likely causes: too few optimizer steps ({steps}: raise trainer.num_train_epochs), the learning rate "
        f"({learning_rate:g}: try 2e-5 to 1e-4), or labels the texts do not tell."
    )
