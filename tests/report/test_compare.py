"""`compare` on two report dicts of any task list: every metric lined up per task, and the AUC test
only where the report has the curve behind the AUC (``auc`` -> ``<task>``, ``conditional_auc`` ->
``<task>_given_<after>``), with that curve's class counts."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from recsys_mtl.report.compare import class_counts, compare, hanley_mcneil_se, load_report, to_html, to_text


def _curve(task: str, positives: list[float], negatives: list[float]) -> dict:
    return {"task": task, "kind": "binary", "histogram": {"edges": [0, 0.5, 1], "positive": positives, "negative": negatives}}


def _report(auc: float, conditional_auc: float, rmse: float, extra_task: bool = False) -> dict:
    tasks = {
        "click": {"type": "binary", "label": "click", "metrics": {"auc": auc, "gauc": 0.6, "gauc_groups": 100, "oracle_auc": 0.9}},
        "cart": {
            "type": "binary",
            "label": "cart",
            "after": "click",
            "metrics": {
                "auc": auc - 0.01,
                "logloss": 0.2,
                "conditional_auc": conditional_auc,
                "conditional_auc_counterfactual": 0.7,
                "oracle_conditional_auc": 0.95,
            },
        },
        "dwell": {"type": "regression", "label": "dwell_ms", "metrics": {"rmse": rmse, "xauc": 0.6, "xauc_pairs": 1000}},
    }
    if extra_task:
        tasks["share"] = {"type": "binary", "label": "share", "metrics": {"auc": 0.7}}
    curves = {
        "click": _curve("click", [3000.0, 2000.0], [40_000.0, 55_000.0]),
        "cart": _curve("cart", [400.0, 100.0], [60_000.0, 39_500.0]),
        "cart_given_click": _curve("cart", [400.0, 100.0], [3000.0, 1500.0]),
        "dwell": {"task": "dwell", "kind": "regression", "histogram": {"edges": [0, 1], "predicted": [5], "target": [5]}},
    }
    return {"tasks": tasks, "curves": curves}


def test_class_counts_map_each_auc_to_its_curve() -> None:
    report = _report(0.7, 0.6, 1.0)
    assert class_counts(report, "click", "auc") == (5000.0, 95_000.0)
    assert class_counts(report, "cart", "auc") == (500.0, 99_500.0)
    assert class_counts(report, "cart", "conditional_auc") == (500.0, 4500.0)  # the parent's positive rows
    for task, metric in (("click", "conditional_auc"), ("click", "gauc"), ("cart", "conditional_auc_counterfactual"), ("dwell", "xauc"), ("dwell", "auc")):
        assert class_counts(report, task, metric) is None, (task, metric)
    report["curves"]["click"]["task"] = "other"  # a curve of another task is not this task's
    assert class_counts(report, "click", "auc") is None


def test_compare_lines_up_every_metric_per_task() -> None:
    a, b = _report(0.70, 0.60, 10.0), _report(0.72, 0.58, 9.0, extra_task=True)
    rows = {(r["task"], r["metric"]): r for r in compare(a, b)}
    assert not any(metric.startswith("oracle_") for _, metric in rows)
    assert set(rows) == {
        ("click", "auc"), ("click", "gauc"), ("click", "gauc_groups"),
        ("cart", "auc"), ("cart", "logloss"), ("cart", "conditional_auc"), ("cart", "conditional_auc_counterfactual"),
        ("dwell", "rmse"), ("dwell", "xauc"), ("dwell", "xauc_pairs"),
        ("share", "auc"),
    }  # fmt: skip

    auc = rows[("click", "auc")]
    assert auc["delta"] == pytest.approx(0.02)
    se = math.hypot(hanley_mcneil_se(0.70, 5000, 95_000), hanley_mcneil_se(0.72, 5000, 95_000))
    assert auc["z"] == pytest.approx(0.02 / se) and auc["significant"] is True

    conditional = rows[("cart", "conditional_auc")]
    se = math.hypot(hanley_mcneil_se(0.60, 500, 4500), hanley_mcneil_se(0.58, 500, 4500))
    assert conditional["z"] == pytest.approx(-0.02 / se)
    assert conditional["significant"] is (abs(conditional["z"]) > 1.96)

    for key in (("click", "gauc"), ("cart", "logloss"), ("cart", "conditional_auc_counterfactual"), ("dwell", "rmse"), ("dwell", "xauc")):
        assert rows[key]["z"] is None and rows[key]["delta"] is not None, key
    assert rows[("dwell", "rmse")]["delta"] == pytest.approx(-1.0)
    assert rows[("click", "gauc_groups")]["delta"] == 0
    share = rows[("share", "auc")]
    assert (share["a"], share["b"], share["delta"], share["z"]) == (None, 0.7, None, None)


def test_small_counts_are_not_significant() -> None:
    a, b = _report(0.70, 0.60, 1.0), _report(0.72, 0.62, 1.0)
    for report in (a, b):
        report["curves"]["cart_given_click"] = _curve("cart", [3.0, 2.0], [20.0, 25.0])
    row = next(r for r in compare(a, b) if (r["task"], r["metric"]) == ("cart", "conditional_auc"))
    assert row["z"] is not None and row["significant"] is False


def test_text_and_html(tmp_path: Path) -> None:
    a, b = _report(0.70, 0.60, 10.0), _report(0.72, 0.58, 9.0, extra_task=True)
    rows = compare(a, b)
    text = to_text(rows, "runs/a", "runs/b")
    lines = text.splitlines()
    assert lines[:2] == ["A: runs/a", "B: runs/b"]
    click = next(line for line in lines if line.split()[:2] == ["click", "auc"])
    assert "+0.0200" in click and re.search(r"z = \+\d+\.\d \*$", click)
    counterfactual = next(line for line in lines if line.split()[:2] == ["cart", "conditional_auc_counterfactual"])
    assert counterfactual.split()[2:] == ["0.7000", "0.7000", "+0.0000"]  # no AUC test: no curve behind it
    assert next(line for line in lines if line.startswith("share")).split() == ["share", "auc", "–", "0.7000"]
    page = to_html(rows, "runs/a", "runs/<b>")
    assert "runs/&lt;b&gt;" in page and "<td>conditional_auc</td>" in page and "+0.0200" in page

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.json").write_text(json.dumps(a))
    assert load_report(tmp_path / "r") == load_report(tmp_path / "r" / "metrics.json") == a
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        load_report(tmp_path / "nowhere")
