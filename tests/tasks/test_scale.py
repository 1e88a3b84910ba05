"""A label in the wrong units is reported before it wrecks the other tasks (docs/tasks.md)."""

from __future__ import annotations

import math

import torch

from recsys_mtl.tasks.graph import TaskSpec
from recsys_mtl.tasks.scale import dwarfing, initial_losses

TASKS = [TaskSpec("click"), TaskSpec("conversion", after="click"), TaskSpec("watch", type="weighted_logistic")]


def labels(watch_unit: float) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    click = (torch.rand(10_000) < 0.05).float()
    return {"click": click, "conversion": click * (torch.rand(10_000) < 0.05).float(), "watch": click * 60.0 * watch_unit}


def mean_losses(tasks: list[TaskSpec], y: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v[0] / v[1]) for k, v in initial_losses(tasks, y, torch.ones(10_000)).items()}


def test_initial_losses_are_the_losses_at_zero_logits():
    got = mean_losses(TASKS, labels(1.0))
    assert math.isclose(got["click"], math.log(2), rel_tol=1e-6)
    y = labels(1.0)
    rate = float(y["conversion"].mean())
    assert math.isclose(got["conversion"], -(rate * math.log(0.25) + (1 - rate) * math.log(0.75)), rel_tol=1e-6)
    clicks = float(y["click"].mean())
    assert math.isclose(got["watch"], math.log(2) * (clicks * 60 + (1 - clicks)), rel_tol=1e-5)


def test_milliseconds_are_reported_with_the_scale_that_fixes_them_and_seconds_are_not():
    assert dwarfing(mean_losses(TASKS, labels(1.0)), "loss", TASKS) is None
    message = dwarfing(mean_losses(TASKS, labels(1000.0)), "loss at initialisation", TASKS)
    assert message is not None and "task 'watch'" in message and "set tasks.watch.scale" in message
    scaled = [*TASKS[:2], TaskSpec("watch", type="weighted_logistic", scale=0.001)]
    assert dwarfing(mean_losses(scaled, labels(1000.0)), "loss", scaled) is None


def test_a_rare_binary_task_is_no_reason_to_warn():
    tasks = [TaskSpec("click"), TaskSpec("follow"), TaskSpec("share")]
    assert dwarfing({"click": 0.15, "follow": 0.001, "share": 0.1}, "loss", tasks) is None
