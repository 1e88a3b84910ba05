"""Report figures: each function draws one matplotlib figure and returns it as PNG bytes.

The inputs are the plain lists of the evaluation report's ``curves`` section and series taken from the
training log; ``None`` entries (NaN after JSON) become gaps in the lines.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

# Reports are rendered on servers and CI runners without a display.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DPI = 100
FIGSIZE = (6.4, 4.8)
# A series whose positive values span this ratio or more is drawn on a log axis: score histograms
# (rare positives) and regression targets (mostly zeros, heavy tails) are unreadable on a linear one.
LOG_SPAN = 100.0

Series = Mapping[str, tuple[Sequence[float], Sequence[float | None]]]


def _arr(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _same_length(what: str, **arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{what}: lists of different lengths {lengths}")


def _wants_log(*arrays: np.ndarray) -> bool:
    values = np.concatenate([a[np.isfinite(a)] for a in arrays])
    positive = values[values > 0]
    return positive.size > 0 and positive.max() / positive.min() >= LOG_SPAN


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buf.getvalue()


def _finish(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")


def roc_png(title: str, roc: Mapping, oracle_roc: Mapping | None = None) -> bytes:
    """ROC curve of the model, the oracle's (true probabilities) dashed when given, and the chance line."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for label, curve, style in (("model", roc, "-"), ("oracle", oracle_roc, "--")):
        if curve is None:
            continue
        fpr, tpr = _arr(curve["fpr"]), _arr(curve["tpr"])
        _same_length(f"{title} {label} ROC", fpr=fpr, tpr=tpr)
        ax.plot(fpr, tpr, style, label=label)
    ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    _finish(ax, title, "false positive rate", "true positive rate")
    return _png(fig)


def pr_png(title: str, pr: Mapping) -> bytes:
    """Precision-recall curve; the y axis starts at 0 but is not stretched to 1 (rare positives)."""
    recall, precision = _arr(pr["recall"]), _arr(pr["precision"])
    _same_length(f"{title} PR", recall=recall, precision=precision)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(recall, precision, label="model")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    _finish(ax, title, "recall", "precision")
    return _png(fig)


def calibration_png(title: str, calibration: Mapping, xlabel: str, ylabel: str) -> bytes:
    """Mean prediction against the observed mean per bin, the diagonal, and rows per bin as light bars.

    Used for binary views (observed positive rate) and regression views (mean target).
    """
    predicted, observed = _arr(calibration["predicted"]), _arr(calibration["observed"])
    counts = _arr(calibration.get("count", [np.nan] * len(predicted)))
    _same_length(f"{title} calibration", predicted=predicted, observed=observed, count=counts)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    log = _wants_log(predicted, observed)
    finite = np.concatenate([predicted[np.isfinite(predicted)], observed[np.isfinite(observed)]])
    if finite.size:
        lo, hi = (finite[finite > 0].min(), finite.max()) if log else (min(0.0, finite.min()), finite.max())
        ax.plot([lo, hi], [lo, hi], ":", color="gray", label="perfect calibration")
    if np.isfinite(counts).any():
        # Counts on a twin axis drawn beneath the curve; vlines keep a constant width on log x axes.
        bars = ax.twinx()
        bars.vlines(predicted, 0, counts, colors="tab:gray", alpha=0.25, linewidth=6, label="rows per bin")
        bars.set_ylabel("rows per bin")
        bars.set_ylim(bottom=0)
        ax.set_zorder(bars.get_zorder() + 1)
        ax.patch.set_visible(False)
    ax.plot(predicted, observed, "o-", color="tab:blue", label="model")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    _finish(ax, title, xlabel, ylabel)
    return _png(fig)


def _histogram_png(
    title: str, edges: Sequence[float], series: Mapping[str, Sequence[float]], xlabel: str
) -> bytes:
    edge_arr = _arr(edges)
    counts = {label: _arr(values) for label, values in series.items()}
    for label, values in counts.items():
        if len(values) + 1 != len(edge_arr):
            raise ValueError(f"{title}: {len(edge_arr)} edges for {len(values)} {label} counts")
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for label, values in counts.items():
        filled = ax.stairs(values, edge_arr, label=label, fill=True, alpha=0.3)
        ax.stairs(values, edge_arr, color=filled.get_facecolor(), alpha=1.0, linewidth=1.2)
    if _wants_log(*counts.values()):
        ax.set_yscale("log")
    _finish(ax, title, xlabel, "rows")
    return _png(fig)


def score_histogram_png(title: str, histogram: Mapping) -> bytes:
    """Predicted score histogram of positive and negative rows (counts per bin)."""
    series = {"positive": histogram["positive"], "negative": histogram["negative"]}
    return _histogram_png(title, histogram["edges"], series, "predicted probability")


def value_histogram_png(title: str, histogram: Mapping) -> bytes:
    """Histogram of a regression view's predicted values and targets (counts per bin), in the label
    column's units."""
    series = {"predicted": histogram["predicted"], "target": histogram["target"]}
    return _histogram_png(title, histogram["edges"], series, "value (predicted or target)")


def series_png(title: str, series: Series, ylabel: str) -> bytes:
    """One line per key (e.g. task) of ``{key: (steps, values)}`` against the training step."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    values = []
    for label, (steps, ys) in series.items():
        y = _arr(ys)
        ax.plot(_arr(steps), y, label=label, linewidth=1.2)
        values.append(y)
    if values and _wants_log(*values) and all((v[np.isfinite(v)] > 0).all() for v in values):
        ax.set_yscale("log")
    _finish(ax, title, "step", ylabel)
    return _png(fig)


def metric_grid_png(title: str, metrics: Mapping[str, Series]) -> bytes:
    """One subplot per metric (``{metric: {task: (steps, values)}}``), one line per task in each.

    Metrics rather than tasks get their own axes so that each axis holds a single scale.
    """
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (metric, series) in zip(axes.flat, metrics.items(), strict=False):
        for task, (steps, ys) in series.items():
            ax.plot(_arr(steps), _arr(ys), "o-", markersize=3, label=task)
        _finish(ax, metric, "step", metric)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    return _png(fig)
