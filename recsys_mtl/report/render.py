"""Offline evaluation report: metrics.json, PNG plots, report.md and a self-contained report.html.

The document is a list of blocks (``document.py``) rendered once as Markdown and once as HTML. The task
sections (``task_sections.py``) follow the report's task list; each curve of the report is drawn by
its ``kind`` (binary: ROC with the oracle's dashed, precision-recall, calibration, score histogram;
regression: predicted-vs-target histogram and calibration).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from recsys_mtl.report import plots
from recsys_mtl.report.document import (
    Block,
    Code,
    Heading,
    Paragraph,
    Plot,
    Table,
    format_value,
    json_safe,
    to_html,
    to_markdown,
)
from recsys_mtl.report.headline import headline_metrics
from recsys_mtl.report.task_sections import headline, overview, task_sections

__all__ = ["format_value", "json_safe", "write_report"]

log = logging.getLogger("recsys_mtl.report")

ORACLE = "oracle_"
HEADER_KEYS = ("run", "data", "created", "rows", "world_size")
BINARY, REGRESSION = "binary", "regression"


# --- plots --------------------------------------------------------------------------------------------


def _stem(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts))


def curve_kind(curve: Mapping[str, Any]) -> str:
    """The curve's ``kind``; for a report without one, read from what the curve holds (a histogram of
    positives and negatives, or a ROC, is a binary view's)."""
    if curve.get("kind") in (BINARY, REGRESSION):
        return str(curve["kind"])
    if "roc" in curve or "positive" in (curve.get("histogram") or {}):
        return BINARY
    return REGRESSION


def curve_plots(name: str, curve: Mapping[str, Any]) -> list[Plot]:
    """The plots of one curve of the report (``name``: the output it evaluates), chosen by its kind."""
    task = curve.get("task")
    label = name if task in (None, name) else f"{name} (task {task})"
    out = []

    def add(part: str, title: str, draw: Callable[..., bytes], *args: object) -> None:
        title = f"{label} {title}"
        out.append(Plot(_stem(name, part), title, draw(title, *args)))

    if curve_kind(curve) == BINARY:
        if "roc" in curve:
            add("roc", "ROC", plots.roc_png, curve["roc"], curve.get("oracle_roc"))
        if "pr" in curve:
            add("pr", "precision-recall", plots.pr_png, curve["pr"])
        if "calibration" in curve:
            axes = ("mean predicted probability", "observed positive rate")
            add("calibration", "calibration", plots.calibration_png, curve["calibration"], *axes)
        if "histogram" in curve:
            title = "score histogram (positives vs negatives)"
            add("histogram", title, plots.score_histogram_png, curve["histogram"])
    else:
        if "histogram" in curve:
            add("histogram", "histogram (predicted vs target)", plots.value_histogram_png, curve["histogram"])
        if "calibration" in curve:
            axes = ("mean predicted value", "mean target")
            add("calibration", "calibration", plots.calibration_png, curve["calibration"], *axes)
    return out


def _with_values(series: dict[str, tuple[list, list]]) -> dict[str, tuple[list, list]]:
    """The series holding at least one number: an all-NaN line would only draw an empty axis."""
    return {
        key: (steps, values)
        for key, (steps, values) in series.items()
        if any(isinstance(v, int | float) and math.isfinite(v) for v in values)
    }


def _train_series(train_log: Iterable[Mapping], field: str) -> dict[str, tuple[list, list]]:
    """``{key: (steps, values)}`` of the ``field`` mapping (loss, task_weights) of the train records."""
    series: dict[str, tuple[list, list]] = {}
    for record in train_log:
        if record.get("event") != "train" or "step" not in record:
            continue
        for key, value in (record.get(field) or {}).items():
            steps, values = series.setdefault(key, ([], []))
            steps.append(record["step"])
            values.append(math.nan if value is None else value)  # the job log writes NaN as null
    return _with_values(series)


def _eval_series(train_log: Iterable[Mapping], tasks: Mapping[str, Mapping]) -> dict[str, dict[str, tuple[list, list]]]:
    """``{metric: {task: (steps, values)}}`` of the eval records: a task of ``tasks`` shows its headline
    metrics, another every metric; oracle values and counts are left out because they do not change
    with training."""
    series: dict[str, dict[str, tuple[list, list]]] = {}
    for record in train_log:
        if record.get("event") != "eval" or "step" not in record:
            continue
        for task, metrics in (record.get("metrics") or {}).items():
            shown = set(headline_metrics({**tasks[task], "metrics": metrics})) if task in tasks else None
            for metric, value in metrics.items():
                if metric.startswith(ORACLE) or isinstance(value, int) or (shown is not None and metric not in shown):
                    continue
                steps, values = series.setdefault(metric, {}).setdefault(task, ([], []))
                steps.append(record["step"])
                values.append(math.nan if value is None else value)
    return {metric: lines for metric, by_task in series.items() if (lines := _with_values(by_task))}


def _training_plots(train_log: Sequence[Mapping], tasks: Mapping[str, Mapping]) -> list[Plot]:
    out = []
    if loss := _train_series(train_log, "loss"):
        title = "training loss per task"
        out.append(Plot("train_loss", title, plots.series_png(title, loss, "loss")))
    if weights := _train_series(train_log, "task_weights"):
        title = "task weights"
        out.append(Plot("train_task_weights", title, plots.series_png(title, weights, "weight")))
    if metrics := _eval_series(train_log, tasks):
        title = "eval metrics during training (headline metrics)" if tasks else "eval metrics during training"
        out.append(Plot("eval_metrics", title, plots.metric_grid_png(title, metrics)))
    return out


# --- sections -----------------------------------------------------------------------------------------


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float)


def _header(report: Mapping) -> list[Block]:
    run = report.get("run")
    title = f"Evaluation report: {Path(run).name}" if run else "Evaluation report"
    keys = [k for k in HEADER_KEYS if k in report]
    keys += [k for k, v in report.items() if k not in HEADER_KEYS and _is_scalar(v)]
    rows = [(k, format_value(report[k])) for k in keys]
    blocks: list[Block] = [Heading(1, title)]
    if rows:
        blocks.append(Table(("field", "value"), rows, (False, False)))
    return blocks


def _data_quality(quality: Mapping | None) -> list[Block]:
    if not quality:
        return []
    rows = []
    for check, value in quality.items():
        if isinstance(value, Mapping) and value:
            rows += [(check, str(k), format_value(v)) for k, v in value.items()]
        elif isinstance(value, Mapping | list):
            # Lists (empty_files) and empty mappings: which ones, and how many.
            rows.append((check, ", ".join(map(str, value)), format_value(len(value))))
        else:
            rows.append((check, "", format_value(value)))
    return [Heading(2, "Data quality"), Table(("check", "key", "count"), rows, (False, False, True))]


def _other_curves(groups: Sequence[tuple[str, list[Plot]]]) -> list[Block]:
    """Curves of a task the report's task list does not hold (a report edited by hand, or an old one)."""
    blocks: list[Block] = []
    for name, group in groups:
        if group:
            blocks += [Heading(3, name), *(p.image() for p in group)]
    return [Heading(2, "Other curves"), *blocks] if blocks else []


def _training(train_log: Sequence[Mapping], training_plots: list[Plot]) -> list[Block]:
    if not training_plots:
        return []
    counts = {event: sum(1 for r in train_log if r.get("event") == event) for event in ("train", "eval")}
    last_step = max((r["step"] for r in train_log if "step" in r), default=None)
    summary = f"{format_value(counts['train'])} train records, {format_value(counts['eval'])} eval records"
    summary += f", last step {format_value(last_step)}."
    return [
        Heading(2, "Training curves"),
        Paragraph(summary),
        *(p.image() for p in training_plots),
    ]


def _cell(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value)
    return format_value(value)


def _plan(plan: Sequence[Mapping] | None) -> list[Block]:
    if not plan:
        return []
    columns = list(dict.fromkeys(k for entry in plan for k in entry))
    rows = [tuple(_cell(entry.get(c)) for c in columns) for entry in plan]
    numeric = tuple(
        all(isinstance(e.get(c), int | float) and not isinstance(e.get(c), bool) for e in plan)
        for c in columns
    )
    return [Heading(2, "Sharding plan"), Table(tuple(columns), rows, numeric)]


def _config(config_yaml: str) -> list[Block]:
    return [Heading(2, "Resolved config"), Code("yaml", config_yaml)] if config_yaml.strip() else []


# --- entry point --------------------------------------------------------------------------------------


def write_report(
    out: Path,
    report: dict,
    train_log: list[dict],
    config_yaml: str,
    plan: list[dict] | None,
) -> dict[str, Path | list[Path]]:
    """Write metrics.json, plots/*.png, report.md and report.html into ``out``; return their paths.

    Sections whose inputs are missing (no oracle values, no curves, empty train log, no plan) are left out.
    """
    out = Path(out)
    report = json_safe(report)
    tasks = report.get("tasks") or {}
    quality = report.get("data_quality")

    by_task: dict[str, list[Plot]] = {}
    others: list[tuple[str, list[Plot]]] = []
    for name, curve in (report.get("curves") or {}).items():
        group = curve_plots(name, curve)
        if curve.get("task", name) in tasks:
            by_task.setdefault(curve.get("task", name), []).extend(group)
        else:
            others.append((name, group))
    training_plots = _training_plots(train_log, tasks)
    all_plots = [p for group in by_task.values() for p in group] + [p for _, g in others for p in g] + training_plots

    (out / "plots").mkdir(parents=True, exist_ok=True)
    plot_paths = []
    for plot in all_plots:
        path = out / plot.path
        path.write_bytes(plot.png)
        plot_paths.append(path)

    blocks = [
        *_header(report),
        *overview(tasks, quality),
        *headline(report),
        *task_sections(tasks, quality, by_task),
        *_other_curves(others),
        *_data_quality(quality),
        *_training(train_log, training_plots),
        *_plan(plan),
        *_config(config_yaml),
    ]
    paths = {"json": out / "metrics.json", "markdown": out / "report.md", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(to_markdown(blocks), encoding="utf-8")
    paths["html"].write_text(to_html(blocks), encoding="utf-8")
    log.info("wrote report to %s (%d plots)", out, len(plot_paths))
    return {**paths, "plots": plot_paths}
