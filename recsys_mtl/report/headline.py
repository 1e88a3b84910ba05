"""The headline metrics of a report: per task, the few metrics its type and place in the task graph
make the ones to look at first (the report's summary table, ``recsys-mtl evaluate``'s output, the demo).

* binary: ``auc``; a task on every row (no ``after``, no ``where``) also ``gauc`` and ``calibration``;
  a funnel stage also ``conditional_auc`` (its conditional output on its parent's positive rows);
* regression / weighted_logistic: ``xauc`` and ``rmse``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recsys_mtl.report.document import format_value

ORACLE = "oracle_"


def task_type(entry: Mapping[str, Any]) -> str:
    """The task's type as the report states it (binary when the entry does not say and has an AUC)."""
    if entry.get("type"):
        return str(entry["type"])
    return "binary" if "auc" in (entry.get("metrics") or {}) else "regression"


def headline_metrics(entry: Mapping[str, Any]) -> list[str]:
    """The headline metric names of one task entry of the report, those it has, in order."""
    metrics = entry.get("metrics") or {}
    if task_type(entry) == "binary":
        names = ["auc"]
        if entry.get("after"):
            names.append("conditional_auc")
        elif not entry.get("where"):
            names += ["gauc", "calibration"]
    else:
        names = ["xauc", "rmse"]
    return [n for n in names if n in metrics]


def headline_rows(report: Mapping[str, Any]) -> list[tuple[str, str, Any, Any]]:
    """``(task, metric, model value, oracle value or None)`` for every headline metric of every task."""
    rows = []
    for task, entry in (report.get("tasks") or {}).items():
        metrics = entry.get("metrics") or {}
        rows += [(task, m, metrics[m], metrics.get(ORACLE + m)) for m in headline_metrics(entry)]
    return rows


def headline_text(report: Mapping[str, Any]) -> str:
    """The headline rows as a plain-text table, the oracle's (true probabilities) beside the model's."""
    rows = [(t, m, format_value(model), format_value(oracle)) for t, m, model, oracle in headline_rows(report)]
    header = ("task", "metric", "model", "oracle")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    has_oracle = any(r[3] != format_value(None) for r in rows)
    shown = 4 if has_oracle else 3
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), *(c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True))]
        lines.append("  ".join(cells[:shown]).rstrip())
    return "\n".join(lines)
