"""The pictures of a scored split: a confusion matrix, per-label F1 bars, or a scatter plot."""

from typing import List, Mapping


def figure(size=(6.5, 5.5)):
    """An empty figure and its axes, drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed (servers, clusters)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size, dpi=120)


def confusion_figure(matrix: List[List[int]], labels: List[str], title: str):
    """A labelled confusion matrix with counts in the cells, drawn off-screen."""
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.5, 0.7 * len(labels) + 2.5)
    fig, axes = figure((size + 0.8, size))
    display = ConfusionMatrixDisplay(np.array(matrix), display_labels=labels)
    display.plot(ax=axes, cmap="Blues", values_format="d", colorbar=True, xticks_rotation=30 if len(labels) > 3 else 0)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("Predicted label")
    axes.set_ylabel("True label")
    fig.tight_layout()
    return fig


def per_label_figure(per_label: Mapping[str, Mapping[str, float]], title: str):
    """Multi-label: each label's F1 as a bar, its support and threshold beside it, best first."""
    ranked = sorted(per_label.items(), key=lambda item: -item[1]["f1"])
    fig, axes = figure((7.5, max(3.5, 0.28 * len(ranked) + 1.5)))
    names = [name for name, _ in ranked]
    axes.barh(range(len(ranked)), [scores["f1"] for _, scores in ranked], color="tab:blue")
    axes.set_yticks(range(len(ranked)), names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 1.25)
    for y, (_, scores) in enumerate(ranked):
        axes.text(
            scores["f1"] + 0.01,
            y,
            f"n={scores['support']}  t={scores.get('threshold', 0.5):.2f}",
            va="center",
            fontsize=7,
        )
    axes.set_xlabel("F1 (at the label's threshold t; n = rows with the label)")
    axes.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def scatter_figure(truth, predicted, title: str):
    """Regression: predicted against gold, with the line where they are equal."""
    import numpy as np

    fig, axes = figure((6, 6))
    truth, predicted = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
    axes.scatter(truth, predicted, s=6, alpha=0.4)
    low, high = float(min(truth.min(), predicted.min())), float(max(truth.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="tab:red", linewidth=1, label="predicted = gold")
    axes.set_xlabel("Gold score")
    axes.set_ylabel("Predicted score")
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def reliability_figure(curves: Mapping[str, tuple], axis: str, title: str):
    """Reliability diagram: per bin, the observed frequency against the mean probability.

    Before and after calibration.
    """
    from finetune.tasks.calibration import BINNING, BINS, expected_calibration_error, reliability

    fig, axes = figure((6, 6))
    axes.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--", label="calibrated")
    for (when, (probability, outcome)), color in zip(curves.items(), ("tab:orange", "tab:blue")):
        mean_p, frequency, _ = reliability(probability, outcome)
        ece = expected_calibration_error(probability, outcome)
        axes.plot(mean_p, frequency, marker="o", color=color, label=f"{when} calibration (ECE {ece:.3f})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel(f"Mean {axis} ({BINS} {BINNING} bins)")
    axes.set_ylabel("Observed frequency (right / label present)")
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def risk_coverage_figure(confidence, correct, title: str):
    """Accuracy on the answered rows against the share answered, surest first."""
    import numpy as np

    order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
    right = np.asarray(correct, dtype=float)[order]
    answered = np.arange(1, len(right) + 1)
    fig, axes = figure((6.5, 4.5))
    axes.plot(answered / max(len(right), 1), np.cumsum(right) / answered, color="tab:blue")
    axes.set_xlim(0, 1)
    axes.set_xlabel("Coverage (share of rows answered, most confident first)")
    axes.set_ylabel("Accuracy on the answered rows")
    axes.grid(alpha=0.3)
    axes.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
