"""The promotion gate: the new model's report against the published model's report on the same data,
rule by rule, each outcome with a sentence that says why.

A metric the gate cannot use is a decision, never a crash (the pipeline then refuses with exit 3 and
writes its ``decision.json``). A metric is unusable when its task or the metric is not in the report, or
its value is null (how a report writes NaN: ``metrics.streaming`` makes every metric of a model with a
NaN or infinite prediction NaN), NaN, infinite or not a number:

* in the new model's report: the rule fails, with the reason; a model is never published on a number
  it does not have;
* in the published model's report, for ``max_drop`` / ``max_rise``: there is nothing to compare with,
  so the relative check passes saying why, and the new model is held to the rest of its rule (a usable
  value, ``min`` / ``max``) as when nothing is published. Refusing instead would keep a broken published
  model (or one whose report predates the task or metric) in place forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from recsys_mtl.pipeline.config import GateRule


@dataclass(frozen=True)
class Check:
    rule: str  # e.g. "ctr auc max_drop 0.002"
    passed: bool
    message: str


def metric(report: dict[str, Any], task: str, name: str, whose: str) -> tuple[float | None, str]:
    """``report["tasks"][task]["metrics"][name]`` and ``""`` when it is a finite number; otherwise
    ``None`` and the sentence saying why not (naming what the report has when the task or the metric
    is not in it). ``whose``: e.g. "new model" (-> "the new model's report")."""
    tasks = report.get("tasks") or {}
    label = f"{task} {name}"
    if task not in tasks:
        return None, f"task {task!r} is not in the {whose}'s report; its tasks: {sorted(tasks)}"
    metrics = tasks[task].get("metrics") or {}
    if name not in metrics:
        return None, f"{label} is not in the {whose}'s report; {task}'s metrics: {sorted(metrics)}"
    value = metrics[name]
    if value is None:
        return None, f"{label} is null in the {whose}'s report (not a number)"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"{label} is not a number in the {whose}'s report: {value!r}"
    if math.isnan(value):
        return None, f"{label} is NaN in the {whose}'s report (not a number)"
    if math.isinf(value):
        return None, f"{label} is infinite in the {whose}'s report ({value})"
    return float(value), ""


def _names(rule: GateRule, label: str) -> list[str]:
    """The name of each check a rule makes."""
    out = []
    if rule.min is not None or rule.max is not None:
        lo = -math.inf if rule.min is None else rule.min
        hi = math.inf if rule.max is None else rule.max
        out.append(f"{label} in [{lo:g}, {hi:g}]")
    out += [f"{label} max_drop {rule.max_drop:g}"] if rule.max_drop is not None else []
    out += [f"{label} max_rise {rule.max_rise:g}"] if rule.max_rise is not None else []
    return out


def _check(rule: GateRule, new: dict[str, Any], published: dict[str, Any] | None, version: str | None) -> list[Check]:
    label = f"{rule.task} {rule.metric}"
    value, why = metric(new, rule.task, rule.metric, "new model")
    if value is None:  # one failed check for the whole rule: none of its bounds can be checked
        return [Check("; ".join(_names(rule, label)), False, f"{why}: the rule cannot be checked, so it fails")]
    out = []
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
        reference, why = metric(published, rule.task, rule.metric, f"published {version}")
        if reference is None:
            out.append(Check(name, True, f"{label} {value:.4f} is not compared with the published {version}: {why}"))
            continue
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
    for name, task in (report.get("tasks") or {}).items():
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
