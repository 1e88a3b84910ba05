"""Offline evaluation report: metrics.json, PNG plots, report.md and a self-contained report.html.

The document is built once as a list of blocks (heading, paragraph, table, image, code) and each block
renders itself as Markdown and as HTML, so both files carry the same content and every number goes
through :func:`format_value` exactly once.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys_mtl.report import plots

log = logging.getLogger("recsys_mtl.report")

MISSING = "–"
ORACLE = "oracle_"
# Values below this magnitude would print as 0.0000 with four decimals.
SCIENTIFIC_BELOW = 1e-4
HEADER_KEYS = ("run", "data", "created", "rows", "world_size")
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .7em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { display: inline-block; margin: .5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { text-align: center; font-size: .9em; color: #555; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
"""


def format_value(value: object) -> str:
    """The one text form of a value in report tables (Markdown and HTML alike).

    Floats get four decimals (scientific notation when tiny but non-zero), ints thousands separators,
    None and NaN a dash.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and abs(value) < SCIENTIFIC_BELOW:
            return f"{value:.3e}"
        return f"{value:,.4f}"
    return str(value)


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None and numpy values as Python ones, for strict JSON."""
    if isinstance(value, np.ndarray | np.generic):
        return json_safe(value.tolist())
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


# --- document blocks ----------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class Heading:
    level: int
    text: str

    def markdown(self) -> str:
        return f"{'#' * self.level} {self.text}"

    def html(self) -> str:
        return f"<h{self.level}>{html.escape(self.text)}</h{self.level}>"


@dataclass(frozen=True)
class Paragraph:
    text: str

    def markdown(self) -> str:
        return self.text

    def html(self) -> str:
        return f"<p>{html.escape(self.text)}</p>"


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    numeric: tuple[bool, ...]  # right-aligned columns

    def markdown(self) -> str:
        lines = ["| " + " | ".join(_md_cell(h) for h in self.header) + " |"]
        lines.append("| " + " | ".join("---:" if num else "---" for num in self.numeric) + " |")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "\n".join(
            "<tr>"
            + "".join(
                f'<td class="num">{html.escape(c)}</td>' if num else f"<td>{html.escape(c)}</td>"
                for c, num in zip(row, self.numeric, strict=True)
            )
            + "</tr>"
            for row in self.rows
        )
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


@dataclass(frozen=True)
class Image:
    title: str
    path: str  # relative to the report directory
    png: bytes

    def markdown(self) -> str:
        alt = self.title.replace("[", "(").replace("]", ")")
        return f"![{alt}]({self.path})"

    def html(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        title = html.escape(self.title)
        return (
            f'<figure><img alt="{title}" src="data:image/png;base64,{data}">'
            f"<figcaption>{title}</figcaption></figure>"
        )


@dataclass(frozen=True)
class Code:
    language: str
    text: str

    def markdown(self) -> str:
        # The fence must be longer than any backtick run inside the text.
        longest = max((len(run) for run in re.findall(r"`+", self.text)), default=0)
        fence = "`" * max(3, longest + 1)
        return f"{fence}{self.language}\n{self.text.rstrip()}\n{fence}"

    def html(self) -> str:
        return f"<pre><code>{html.escape(self.text.rstrip())}</code></pre>"


Block = Heading | Paragraph | Table | Image | Code


def _to_markdown(blocks: Sequence[Block]) -> str:
    return "\n\n".join(b.markdown() for b in blocks) + "\n"


def _to_html(blocks: Sequence[Block]) -> str:
    title = next((b.text for b in blocks if isinstance(b, Heading)), "report")
    body = "\n".join(b.html() for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


# --- plots --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plot:
    name: str  # file stem under plots/
    title: str
    png: bytes

    @property
    def path(self) -> str:
        return f"plots/{self.name}.png"


def _stem(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts))


def _curve_plots(name: str, curve: Mapping, kind: str | None) -> list[Plot]:
    task = curve.get("task")
    label = name if task in (None, name) else f"{name} (task {task})"
    regression = kind == "watch_time" or (kind is None and name == "watch_time")
    out = []

    def add(part: str, title: str, draw: Callable[..., bytes], *args: object) -> None:
        title = f"{label} {title}"
        out.append(Plot(_stem(name, part), title, draw(title, *args)))

    if "roc" in curve:
        add("roc", "ROC", plots.roc_png, curve["roc"], curve.get("oracle_roc"))
    if "pr" in curve:
        add("pr", "precision-recall", plots.pr_png, curve["pr"])
    if "calibration" in curve:
        axes = (
            ("mean predicted watch time", "mean target watch time")
            if regression
            else ("mean predicted probability", "observed positive rate")
        )
        add("calibration", "calibration", plots.calibration_png, curve["calibration"], *axes)
    if "histogram" in curve:
        if regression:
            add(
                "histogram",
                "histogram (predicted vs target)",
                plots.watch_time_histogram_png,
                curve["histogram"],
            )
        else:
            add(
                "histogram",
                "score histogram (positives vs negatives)",
                plots.score_histogram_png,
                curve["histogram"],
            )
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
            values.append(value)
    return _with_values(series)


def _eval_series(train_log: Iterable[Mapping]) -> dict[str, dict[str, tuple[list, list]]]:
    """``{metric: {task: (steps, values)}}`` of the eval records; oracle values and counts are left out
    because they do not change with training."""
    series: dict[str, dict[str, tuple[list, list]]] = {}
    for record in train_log:
        if record.get("event") != "eval" or "step" not in record:
            continue
        for task, metrics in (record.get("metrics") or {}).items():
            for metric, value in metrics.items():
                if metric.startswith(ORACLE) or isinstance(value, int):
                    continue
                steps, values = series.setdefault(metric, {}).setdefault(task, ([], []))
                steps.append(record["step"])
                values.append(value)
    return {metric: tasks for metric, by_task in series.items() if (tasks := _with_values(by_task))}


def _training_plots(train_log: Sequence[Mapping]) -> list[Plot]:
    out = []
    if loss := _train_series(train_log, "loss"):
        title = "training loss per task"
        out.append(Plot("train_loss", title, plots.series_png(title, loss, "loss")))
    if weights := _train_series(train_log, "task_weights"):
        title = "task weights"
        out.append(Plot("train_task_weights", title, plots.series_png(title, weights, "weight")))
    if metrics := _eval_series(train_log):
        title = "eval metrics during training"
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


def _gap(model: object, oracle: object) -> float | None:
    """model − oracle for real-valued metrics; counts (ints) and missing values have no gap."""
    if isinstance(model, float) and isinstance(oracle, float):
        return model - oracle
    return None


def _metric_table(metrics: Mapping[str, object]) -> Table:
    """One row per metric; with oracle and gap (model − oracle) columns when any ``oracle_*`` key exists."""
    oracle = {k[len(ORACLE) :]: v for k, v in metrics.items() if k.startswith(ORACLE)}
    names = [k for k in metrics if not k.startswith(ORACLE)]
    names += [m for m in oracle if m not in metrics]  # an oracle value without a model value still shows
    if not oracle:
        return Table(("metric", "model"), [(m, format_value(metrics[m])) for m in names], (False, True))
    rows = [
        (
            m,
            format_value(metrics.get(m)),
            format_value(oracle.get(m)),
            format_value(_gap(metrics.get(m), oracle.get(m))),
        )
        for m in names
    ]
    return Table(("metric", "model", "oracle", "gap (model − oracle)"), rows, (False, True, True, True))


def _task_heading(name: str, spec: Mapping) -> str:
    return f"{name} ({spec['kind']})" if spec.get("kind") else name


def _tasks(tasks: Mapping[str, Mapping]) -> list[Block]:
    if not tasks:
        return []
    blocks: list[Block] = [Heading(2, "Metrics")]
    for name, spec in tasks.items():
        blocks += [Heading(3, _task_heading(name, spec)), _metric_table(spec.get("metrics") or {})]
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


def _plot_section(title: str, groups: Sequence[tuple[str, list[Plot]]]) -> list[Block]:
    blocks: list[Block] = []
    for group, group_plots in groups:
        if group_plots:
            blocks.append(Heading(3, group))
            blocks += [Image(p.title, p.path, p.png) for p in group_plots]
    return [Heading(2, title), *blocks] if blocks else []


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
        *[Image(p.title, p.path, p.png) for p in training_plots],
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

    curve_groups = [
        (name, _curve_plots(name, curve, (tasks.get(curve.get("task")) or {}).get("kind")))
        for name, curve in (report.get("curves") or {}).items()
    ]
    training_plots = _training_plots(train_log)
    all_plots = [p for _, group in curve_groups for p in group] + training_plots

    (out / "plots").mkdir(parents=True, exist_ok=True)
    plot_paths = []
    for plot in all_plots:
        path = out / plot.path
        path.write_bytes(plot.png)
        plot_paths.append(path)

    blocks = [
        *_header(report),
        *_tasks(tasks),
        *_data_quality(report.get("data_quality")),
        *_plot_section("Evaluation curves", curve_groups),
        *_training(train_log, training_plots),
        *_plan(plan),
        *_config(config_yaml),
    ]
    paths = {"json": out / "metrics.json", "markdown": out / "report.md", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(_to_markdown(blocks), encoding="utf-8")
    paths["html"].write_text(_to_html(blocks), encoding="utf-8")
    log.info("wrote report to %s (%d plots)", out, len(plot_paths))
    return {**paths, "plots": plot_paths}
