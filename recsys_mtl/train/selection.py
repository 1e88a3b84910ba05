"""Model selection (SPEC §4): ``train.select`` follows one evaluation metric, marks the checkpoint of its
best value and stops training after ``patience`` evaluations without improvement.

Pure Python (no torch): the config schema validates ``train.select`` with ``check_select``, the loop
keeps a ``Selection``. Evaluation metrics are summed over ranks before they are computed, so every rank
sees the same value and reaches the same decision.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Mode = Literal["max", "min"]

# the direction of each metric a task reports that has one (calibration is best at 1, counts have none)
BINARY_METRICS: dict[str, Mode] = {"auc": "max", "pr_auc": "max", "logloss": "min", "ne": "min"}
REGRESSION_METRICS: dict[str, Mode] = {"xauc": "max", "rmse": "min", "mae": "min"}


def natural_mode(metric: str) -> Mode:
    """The direction in which ``<task>.<metric>`` improves (max for the AUCs, min for the losses and
    errors); ``check_select`` has already refused a metric without one."""
    name = metric.partition(".")[2].removeprefix("conditional_").removesuffix("_entire_space")
    return {**BINARY_METRICS, **REGRESSION_METRICS}.get(name, "max")


def selectable_metrics(task_type: str, *, funnel: bool, where: bool, groups: bool) -> dict[str, Mode]:
    """``{metric: natural direction}`` of a task's evaluation metrics that ``train.select`` may follow:
    its own (GAUC with a group key), a funnel stage's ``conditional_*`` and the ``*_entire_space`` AUCs."""
    if task_type != "binary":
        return dict(REGRESSION_METRICS)
    out = dict(BINARY_METRICS)
    if groups:
        out["gauc"] = "max"
    if where:
        out["auc_entire_space"] = "max"
    if funnel:
        out.update({f"conditional_{name}": mode for name, mode in BINARY_METRICS.items()})
        out["conditional_auc_entire_space"] = "max"
    return out


def check_select(metric: str, tasks: dict[str, dict[str, Any]], *, groups: bool, has_eval: bool) -> Mode:
    """The direction of ``train.select.metric`` (``<task>.<metric>``), or ``ValueError`` naming the key and
    what is allowed. ``tasks``: ``{name: {"type", "after", "where"}}``."""
    if not has_eval:
        raise ValueError("train.select follows an evaluation metric: it needs data.eval (the held-out split)")
    task, _, name = metric.partition(".")
    if task not in tasks:
        raise ValueError(f"train.select.metric {metric!r}: no task {task!r}; tasks: {sorted(tasks)} (as <task>.<metric>, e.g. {next(iter(tasks))}.auc)")
    t = tasks[task]
    allowed = selectable_metrics(t["type"], funnel=t["after"] is not None, where=t["where"] is not None, groups=groups)
    if name not in allowed:
        raise ValueError(f"train.select.metric {metric!r}: task {task!r} ({t['type']}) has no metric {name!r} to select by; allowed: {sorted(allowed)}")
    return allowed[name]


@dataclass
class Selection:
    """The best value of one metric so far, where it was reached, and the evaluations since.

    ``update`` is called once per evaluation, in step order; its state (``state`` / ``from_state``)
    goes into every checkpoint's meta so a resumed run continues the count."""

    metric: str  # <task>.<metric>
    mode: Mode
    patience: int | None = None  # evaluations without improvement before stopping; None: never stop
    min_delta: float = 0.0
    best_value: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    bad_evals: int = 0

    def value_of(self, metrics: dict[str, dict[str, float]]) -> float:
        """The followed metric in an evaluation's ``{task: {metric: value}}`` (NaN when absent)."""
        task, _, name = self.metric.partition(".")
        value = metrics.get(task, {}).get(name)
        return math.nan if value is None else float(value)

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best by more than ``min_delta`` (a NaN never does; the first
        finite value always does)."""
        if math.isnan(value):
            return False
        if self.best_value is None:
            return True
        gain = value - self.best_value if self.mode == "max" else self.best_value - value
        return gain > self.min_delta

    def update(self, metrics: dict[str, dict[str, float]], step: int) -> tuple[bool, bool]:
        """Record the evaluation at ``step``: ``(improved, stop)``."""
        value = self.value_of(metrics)
        improved = self.improves(value)
        if improved:
            self.best_value, self.best_step, self.best_metrics, self.bad_evals = value, step, metrics, 0
        else:
            self.bad_evals += 1
        return improved, self.exhausted

    @property
    def exhausted(self) -> bool:
        """``patience`` evaluations in a row without improvement: training should stop."""
        return self.patience is not None and self.bad_evals >= self.patience

    def best(self) -> dict[str, Any]:
        """The record of the best evaluation (a checkpoint's ``meta["best"]``, ``metrics.json``'s ``selected``)."""
        return {"metric": self.metric, "mode": self.mode, "value": self.best_value, "step": self.best_step}

    def stop_message(self, step: int) -> str:
        """The log line of an early stop at ``step``."""
        best = (
            f"the best, {self.best_value:.6g} ({self.mode}), was reached at step {self.best_step} (checkpoints/BEST)"
            if self.best_value is not None else "no evaluation gave a finite value (no best checkpoint)"
        )
        return (
            f"early stop at step {step}: {self.metric} has not improved (by more than {self.min_delta:g}) for "
            f"{self.bad_evals} evaluation(s), train.select.patience={self.patience}; {best}"
        )

    def selected(self, checkpoint: str | None, last_step: int) -> dict[str, Any]:
        """``metrics.json``'s ``selected``: the best evaluation, its checkpoint, and whether training stopped early."""
        return {**self.best(), "checkpoint": checkpoint, "early_stop": self.exhausted, "last_step": last_step}

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, select: Any, saved: dict[str, Any] | None = None) -> Selection | None:
        """The selection ``train.select`` (a ``SelectConfig``, or None) asks for, continuing the state a
        checkpoint saved (``meta["selection"]``) when it followed the same metric. The config's
        ``patience`` / ``min_delta`` win over the saved ones (they may change on resume)."""
        if select is None:
            return None
        fresh = cls(select.metric, select.direction, select.patience, select.min_delta)
        if saved and saved.get("metric") == fresh.metric and saved.get("mode") == fresh.mode:
            return cls(**{**saved, "patience": fresh.patience, "min_delta": fresh.min_delta})
        return fresh
