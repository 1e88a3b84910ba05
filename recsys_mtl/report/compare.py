"""Two evaluation reports side by side: every metric with its delta and, for AUCs, whether the
difference is larger than the evaluation's own sampling noise.

Significance: the two models were scored on the same rows, so a paired test would be sharper
(DeLong); the reports keep histograms, not rows, so the test here is the unpaired Hanley-McNeil
normal approximation of each AUC's standard error, which is conservative for positively correlated
models (it says "not significant" more often than a paired test would).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from recsys_mtl.report.document import format_value


def hanley_mcneil_se(auc: float, positives: float, negatives: float) -> float:
    """Standard error of an AUC from its value and the class counts (Hanley & McNeil, 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / max(positives * negatives, 1.0)
    return math.sqrt(max(var, 0.0))


def auc_curve(report: dict[str, Any], task: str, metric: str) -> str | None:
    """The curve (output) behind an AUC of the report: ``auc`` is the task's output ``<task>`` on its
    space, ``conditional_auc`` a funnel stage's ``<task>_given_<after>`` on its parent's positive rows;
    other metrics have none."""
    if metric == "auc":
        return task
    if metric == "conditional_auc":
        after = ((report.get("tasks") or {}).get(task) or {}).get("after")
        return f"{task}_given_{after}" if after else None
    return None


def class_counts(report: dict[str, Any], task: str, metric: str) -> tuple[float, float] | None:
    """Positive / negative weight behind an AUC, from the report's histogram of that curve."""
    name = auc_curve(report, task, metric)
    curve = (report.get("curves") or {}).get(name) if name else None
    if not curve or curve.get("task", task) != task:
        return None
    histogram = curve.get("histogram") or {}
    if "positive" not in histogram or "negative" not in histogram:
        return None
    positives = sum(v for v in histogram["positive"] if v is not None)
    negatives = sum(v for v in histogram["negative"] if v is not None)
    return (positives, negatives) if positives > 0 and negatives > 0 else None


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (task, metric) present in either report (the oracle's left out): a, b, b − a, and for
    the AUCs with a curve (``auc``, ``conditional_auc``) the z score of the difference."""
    rows = []
    tasks_a, tasks_b = a.get("tasks") or {}, b.get("tasks") or {}
    for task in dict.fromkeys([*tasks_a, *tasks_b]):
        ma = (tasks_a.get(task) or {}).get("metrics") or {}
        mb = (tasks_b.get(task) or {}).get("metrics") or {}
        for metric in dict.fromkeys([*ma, *mb]):
            if metric.startswith("oracle_"):
                continue
            va, vb = ma.get(metric), mb.get(metric)
            row: dict[str, Any] = {"task": task, "metric": metric, "a": va, "b": vb, "delta": None, "z": None, "significant": None}
            if _number(va) and _number(vb):
                row["delta"] = vb - va
                ca, cb = class_counts(a, task, metric), class_counts(b, task, metric)
                if ca and cb and all(math.isfinite(x) for x in (va, vb)):
                    se = math.hypot(hanley_mcneil_se(va, *ca), hanley_mcneil_se(vb, *cb))
                    if se > 0:
                        row["z"] = (vb - va) / se
                        row["significant"] = abs(row["z"]) > 1.96
            rows.append(row)
    return rows


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_report(path: Path) -> dict[str, Any]:
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no metrics.json (pass a report directory written by `recsys-mtl evaluate`)")
    return json.loads(file.read_text())


def _delta(value: float | int | None) -> str:
    if value is None:
        return ""
    return f"{value:+,d}" if isinstance(value, int) else f"{value:+.4f}"


def _mark(row: dict[str, Any]) -> str:
    if row["z"] is None:
        return ""
    return f"z = {row['z']:+.1f}" + (" *" if row["significant"] else "")


def to_text(rows: list[dict[str, Any]], name_a: str, name_b: str) -> str:
    task_w = max([len("task"), *(len(r["task"]) for r in rows)]) + 2
    metric_w = max([len("metric"), *(len(r["metric"]) for r in rows)]) + 2
    header = f"{'task':<{task_w}}{'metric':<{metric_w}}{'A':>12}{'B':>12}{'B - A':>12}  AUC test"
    lines = [f"A: {name_a}", f"B: {name_b}", header]
    for r in rows:
        delta = _delta(r["delta"])
        line = f"{r['task']:<{task_w}}{r['metric']:<{metric_w}}{format_value(r['a']):>12}{format_value(r['b']):>12}"
        lines.append(f"{line}{delta:>12}  {_mark(r)}".rstrip())
    lines.append("* |z| > 1.96: the AUC difference exceeds two standard errors (Hanley-McNeil, unpaired)")
    return "\n".join(lines)


def to_html(rows: list[dict[str, Any]], name_a: str, name_b: str) -> str:
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            r["task"], r["metric"], format_value(r["a"]), format_value(r["b"]),
            _delta(r["delta"]), _mark(r),
        )) + "</tr>"
        for r in rows
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>recsys-mtl compare</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}td:nth-child(-n+2){text-align:left}</style></head><body>"
        f"<h1>Comparison</h1><p>A: {html.escape(name_a)}<br>B: {html.escape(name_b)}</p>"
        "<table><tr><th>task</th><th>metric</th><th>A</th><th>B</th><th>B − A</th><th>AUC test</th></tr>"
        f"{body}</table><p>* |z| &gt; 1.96: the AUC difference exceeds two standard errors "
        "(Hanley-McNeil, unpaired).</p></body></html>\n"
    )
