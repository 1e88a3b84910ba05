"""Label units must not silently wreck other tasks (docs/tasks.md): a regression label in milliseconds
gives a loss thousands of times the others', and its gradient then drowns every other task in the
shared layers. These checks name the task that dwarfs the rest and the ``scale`` that would fix it."""

from __future__ import annotations

import math
import statistics

import torch

from recsys_mtl.tasks.graph import TaskSpec
from recsys_mtl.tasks.losses import row_weights, task_loss

DWARF_RATIO = 100.0
"""A task whose loss (or gradient norm) exceeds the other tasks' median by this factor is reported."""


def initial_losses(
    tasks: list[TaskSpec], labels: dict[str, torch.Tensor], weights: torch.Tensor,
    sample_weights: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Each task's loss summed over a batch, at initialisation (every logit 0), and the weight it is a
    mean over: ``{task: [2]}`` (sum, rows) — accumulate over batches, then divide. The training losses
    themselves (``task_loss``, ``row_weights``) at zero logits. Shapes: ``[B]``."""
    zeros = {t.name: torch.zeros_like(weights) for t in tasks}
    out = {}
    for t in tasks:
        w = row_weights(t, labels, weights, sample_weights)
        loss = task_loss(tasks, t, zeros, labels[t.name])
        out[t.name] = torch.stack([(loss * w).sum(), w.sum()]).double()
    return out


def dwarfing(values: dict[str, float], what: str, tasks: list[TaskSpec]) -> str | None:
    """A warning when one task's ``values`` (losses, gradient norms) exceed the median of the other
    tasks' by DWARF_RATIO. The median, not the minimum: a rare binary objective has a small loss and
    gradient by nature, which is no reason to warn."""
    finite = {k: v for k, v in values.items() if math.isfinite(v) and v > 0}
    if len(finite) < 2:
        return None
    big = max(finite, key=finite.get)  # type: ignore[arg-type]
    reference = statistics.median(v for k, v in finite.items() if k != big)
    ratio = finite[big] / reference
    if ratio < DWARF_RATIO:
        return None
    task = next(t for t in tasks if t.name == big)
    # squared error grows with scale², the weighted logistic loss with scale
    shrink = math.sqrt(ratio) if task.type == "regression" and task.transform == "none" else ratio
    fix = (
        f"set tasks.{big}.scale (e.g. {task.scale / shrink:.2g}) or check its label's units"
        if task.type != "binary" else "lower its weight or pick a balancing strategy"
    )
    return (
        f"task {big!r}: {what} {finite[big]:.4g} is {ratio:,.0f}x the other tasks' median ({reference:.4g}); "
        f"it will dominate the shared layers; {fix}"
    )
