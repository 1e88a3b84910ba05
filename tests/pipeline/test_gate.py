"""The promotion gate's rules on report dicts: what passes, what is refused, and the sentence why."""

from __future__ import annotations

import math

import pytest

from recsys_mtl.config import ConfigError
from recsys_mtl.pipeline.config import GateRule
from recsys_mtl.pipeline.gate import gate_checks


def report(**metrics: dict[str, float]) -> dict:
    return {"tasks": {task: {"metrics": values} for task, values in metrics.items()}}


RULES = (
    GateRule(task="click", metric="auc", max_drop=0.002),
    GateRule(task="click", metric="calibration", min=0.9, max=1.1),
    GateRule(task="watch_time", metric="rmse", max_rise=0.5),
)
PUBLISHED = report(click={"auc": 0.7500, "calibration": 1.0}, watch_time={"rmse": 20.0})


def test_a_model_no_worse_than_the_published_one_passes():
    new = report(click={"auc": 0.7490, "calibration": 1.05}, watch_time={"rmse": 20.3})
    checks = gate_checks(RULES, new, PUBLISHED, "v1")
    assert [c.passed for c in checks] == [True, True, True]
    assert "0.0010 below the published v1 (0.7500); within the 0.002 allowed" in checks[0].message


def test_a_worse_model_is_refused_with_the_reason():
    new = report(click={"auc": 0.7470, "calibration": 1.2}, watch_time={"rmse": 21.0})
    checks = gate_checks(RULES, new, PUBLISHED, "v1")
    failed = {c.rule: c.message for c in checks if not c.passed}
    assert failed == {
        "click calibration in [0.9, 1.1]": "click calibration 1.2000 is outside [0.9, 1.1]",
        "click auc max_drop 0.002": "click auc 0.7470 is 0.0030 below the published v1 (0.7500); more than the 0.002 allowed",
        "watch_time rmse max_rise 0.5": "watch_time rmse 21.0000 is 1.0000 above the published v1 (20.0000); "
        "more than the 0.5 allowed",
    }


def test_without_a_published_model_only_absolute_bounds_apply():
    new = report(click={"auc": 0.51, "calibration": 0.5}, watch_time={"rmse": 99.0})
    checks = gate_checks(RULES, new, None, None)
    assert [c.passed for c in checks] == [True, False, True]
    assert "no published model" in checks[0].message


def test_nan_and_missing_metrics():
    assert not gate_checks(RULES[:1], report(click={"auc": math.nan}), PUBLISHED, "v1")[0].passed
    with pytest.raises(ConfigError, match=r"metric click.auc, not in the new model's report; metrics: \['logloss'\]"):
        gate_checks(RULES[:1], report(click={"logloss": 0.2}), PUBLISHED, "v1")
    with pytest.raises(ConfigError, match="task 'click'"):
        gate_checks(RULES[:1], report(conversion={"auc": 0.7}), PUBLISHED, "v1")


def test_a_rule_must_check_something():
    with pytest.raises(ValueError, match="checks nothing"):
        GateRule(task="click", metric="auc")


def test_default_rules_follow_the_task_list():
    def entry(kind: str, **graph) -> dict:
        return {"type": kind, **graph, "metrics": {"auc": 0.7, "calibration": 1.0, "conditional_auc": 0.6, "xauc": 0.6}}

    new = {"tasks": {
        "click": entry("binary"), "like": entry("binary", after="click"), "cvr": entry("binary", where="click"),
        "share": entry("binary"), "watch_time": entry("weighted_logistic"),
    }}
    checks = gate_checks(None, new, None, None)
    assert [c.rule for c in checks] == [
        "click auc max_drop 0.002", "click calibration in [0.9, 1.1]", "like auc max_drop 0.002",
        "cvr auc max_drop 0.002", "share auc max_drop 0.002", "share calibration in [0.9, 1.1]",
    ]
    worse = {"tasks": {**new["tasks"], "like": {**entry("binary", after="click"), "metrics": {"auc": 0.69}}}}
    refused = [c for c in gate_checks(None, worse, new, "v1") if not c.passed]
    assert [c.rule for c in refused] == ["like auc max_drop 0.002"]
