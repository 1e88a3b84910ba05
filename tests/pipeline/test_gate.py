"""The promotion gate's rules on report dicts: what passes, what is refused, and the sentence why."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import yaml

from recsys_mtl.cli import pipeline as pipeline_cli
from recsys_mtl.pipeline.config import GateRule
from recsys_mtl.pipeline.gate import gate_checks
from recsys_mtl.pipeline.runner import Pipeline


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


def failed(rules, new, published=PUBLISHED, version="v1") -> dict[str, str]:
    checks = gate_checks(rules, new, published, version)
    return {c.rule: c.message for c in checks if not c.passed}


def test_nan_and_missing_metrics_fail_their_rule_with_the_reason():
    assert failed(RULES[:1], report(click={"auc": math.nan})) == {
        "click auc max_drop 0.002": "click auc is NaN in the new model's report (not a number): the rule cannot be checked, so it fails",
    }
    assert failed(RULES[:1], report(click={"logloss": 0.2})) == {
        "click auc max_drop 0.002": "click auc is not in the new model's report; click's metrics: ['logloss']: "
        "the rule cannot be checked, so it fails",
    }


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_an_infinite_metric_fails_its_rule(value):
    assert failed(RULES[1:2], report(click={"calibration": value}), None, None) == {
        "click calibration in [0.9, 1.1]": f"click calibration is infinite in the new model's report ({value}): "
        "the rule cannot be checked, so it fails",
    }


def test_a_null_metric_of_a_report_file_fails_every_bound_of_its_rule():
    # a report writes NaN as null (strict JSON): what the pipeline reads back
    new = json.loads('{"tasks": {"click": {"metrics": {"auc": null, "calibration": 1.0}}, "watch_time": {"metrics": {"rmse": null}}}}')
    rules = (GateRule(task="click", metric="auc", min=0.6, max_drop=0.002), *RULES[1:])
    assert failed(rules, new) == {
        "click auc in [0.6, inf]; click auc max_drop 0.002": "click auc is null in the new model's report (not a number): "
        "the rule cannot be checked, so it fails",
        "watch_time rmse max_rise 0.5": "watch_time rmse is null in the new model's report (not a number): "
        "the rule cannot be checked, so it fails",
    }
    assert failed(rules, new, None, None).keys() == {"click auc in [0.6, inf]; click auc max_drop 0.002", "watch_time rmse max_rise 0.5"}


def test_a_rule_naming_a_task_not_in_the_report_fails_and_lists_the_tasks():
    assert failed(RULES[:1], report(conversion={"auc": 0.7}, share={"auc": 0.6})) == {
        "click auc max_drop 0.002": "task 'click' is not in the new model's report; its tasks: ['conversion', 'share']: "
        "the rule cannot be checked, so it fails",
    }


@pytest.mark.parametrize("published", [
    report(click={"auc": None, "calibration": 1.0}),  # the published model's predictions were NaN
    report(click={"auc": math.inf, "calibration": 1.0}),
    report(click={"calibration": 1.0}),  # its report predates the metric
    report(conversion={"auc": 0.7}),  # ... or the task
])
def test_an_unusable_published_metric_skips_the_comparison_but_not_the_absolute_bounds(published):
    rules = (GateRule(task="click", metric="auc", max_drop=0.002, min=0.6), *RULES[1:2])
    checks = gate_checks(rules, report(click={"auc": 0.62, "calibration": 1.05}), published, "v1")
    assert [(c.rule, c.passed) for c in checks] == [
        ("click auc in [0.6, inf]", True), ("click auc max_drop 0.002", True), ("click calibration in [0.9, 1.1]", True),
    ]
    assert checks[1].message.startswith("click auc 0.6200 is not compared with the published v1: ")
    assert "published v1's report" in checks[1].message
    refused = gate_checks(rules, report(click={"auc": 0.55, "calibration": 1.05}), published, "v1")
    assert [c.rule for c in refused if not c.passed] == ["click auc in [0.6, inf]"]


def test_the_pipeline_refuses_a_model_with_a_null_metric_with_exit_3_and_its_decision(tmp_path, monkeypatch, capsys):
    """Through ``recsys-mtl pipeline``'s gate stage, the stages before it stubbed: an evaluated report
    whose AUC is null (NaN predictions) is refused, not a crash of the gate stage (exit 1)."""
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "metrics.json").write_text(json.dumps(
        {"tasks": {"click": {"type": "binary", "metrics": {"auc": None, "calibration": None, "nonfinite_predictions": 12}}}}
    ))
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({
        "work_dir": str(tmp_path / "work"), "training": {"config": str(tmp_path / "unused.yaml")},
        "publish": {"model_root": str(tmp_path / "models")},
    }))
    stages = Pipeline._stages

    def only_the_gate(self):
        self.manifests["evaluate"] = {"id": "evaluated", "outputs": {"report": str(report_dir)}}
        return [s for s in stages(self) if s.name == "gate"]

    monkeypatch.setattr(Pipeline, "_stages", only_the_gate)
    args = argparse.Namespace(config=config, overrides=[], run_id="r", force=[])
    assert pipeline_cli.run(args) == 3
    assert "click auc is null in the new model's report" in capsys.readouterr().out
    decision = json.loads((tmp_path / "work" / "r" / "gate" / "decision.json").read_text())
    assert decision["passed"] is False and decision["published"] is None
    assert [c["rule"] for c in decision["checks"] if not c["passed"]] == ["click auc max_drop 0.002", "click calibration in [0.9, 1.1]"]
    assert not (tmp_path / "models").exists()


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
