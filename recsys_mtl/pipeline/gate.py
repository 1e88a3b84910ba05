"""The promotion gate: the new model's report against the published model's report on the same data,
rule by rule, each outcome with a sentence that says why."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from recsys_mtl.config import ConfigError
from recsys_mtl.pipeline.config import GateRule


@dataclass(frozen=True)
class Check:
    rule: str  # e.g. "ctr auc max_drop 0.002"
    passed: bool
    message: str


def metric(report: dict[str, Any], task: str, name: str, whose: str) -> float:
    """``report["tasks"][task]["metrics"][name]``; ``ConfigError`` listing what exists otherwise."""
    tasks = report.get("tasks", {})
    if task not in tasks:
        raise ConfigError(f"gate rule names task {task!r}, not in the {whose} report; tasks: {sorted(tasks)}")
    metrics = tasks[task]["metrics"]
    if name not in metrics:
        raise ConfigError(f"gate rule names metric {task}.{name}, not in the {whose} report; metrics: {sorted(metrics)}")
    return float(metrics[name])


def _check(rule: GateRule, new: dict[str, Any], published: dict[str, Any] | None, version: str | None) -> list[Check]:
    label = f"{rule.task} {rule.metric}"
    value = metric(new, rule.task, rule.metric, "new model's")
    out = []
    if math.isnan(value):
        return [Check(label, False, f"{label} of the new model is not a number")]
    if rule.min is not None or rule.max is not None:
        lo = -math.inf if rule.min is None else rule.min
        hi = math.inf if rule.max is None else rule.max
        ok = lo <= value <= hi
        where = "inside" if ok else "outside"
        out.append(Check(f"{label} in [{lo:g}, {hi:g}]", ok, f"{label} {value:.4f} is {where} [{lo:g}, {hi:g}]"))
    for bound, sign, word in ((rule.max_drop, -1, "below"), (rule.max_rise, 1, "above")):
        if bound is None:
            continue
        name = f"{label} max_{'drop' if sign < 0 else 'rise'} {bound:g}"
        if published is None:
            out.append(Check(name, True, f"{label} {value:.4f}: no published model to compare with"))
            continue
        reference = metric(published, rule.task, rule.metric, f"published {version}")
        worse_by = sign * (value - reference)  # > 0: moved the wrong way
        ok = worse_by <= bound
        if worse_by > 0:
            limit = "within" if ok else "more than"
            message = (
                f"{label} {value:.4f} is {worse_by:.4f} {word} the published {version} ({reference:.4f}); "
                f"{limit} the {bound:g} allowed"
            )
        else:
            message = f"{label} {value:.4f} is no worse than the published {version} ({reference:.4f})"
        out.append(Check(name, ok, message))
    return out


def default_rules(report: dict[str, Any]) -> tuple[GateRule, ...]:
    """The rules a gate without configured ones applies, from the report's task list: every binary
    task's AUC may drop by at most 0.002 against the published model, and the calibration (Σp/Σy) of
    binary tasks outside any funnel or sample space stays within [0.9, 1.1]."""
    rules = []
    for name, task in report.get("tasks", {}).items():
        if task.get("type") != "binary":
            continue
        rules.append(GateRule(task=name, metric="auc", max_drop=0.002))
        if "after" not in task and "where" not in task:
            rules.append(GateRule(task=name, metric="calibration", min=0.9, max=1.1))
    return tuple(rules)


def gate_checks(
    rules: tuple[GateRule, ...] | None, new: dict[str, Any], published: dict[str, Any] | None, version: str | None
) -> list[Check]:
    """Every rule's checks of the ``new`` report (and the ``published`` one, when there is one);
    ``rules`` None: ``default_rules(new)``."""
    chosen = default_rules(new) if rules is None else rules
    return [check for rule in chosen for check in _check(rule, new, published, version)]
