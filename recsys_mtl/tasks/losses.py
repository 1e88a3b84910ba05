"""Task losses from tower logits, driven by the task list (docs/tasks.md); pure functions of tensors.

Notation: B rows; every tensor here is ``[B]``. ``weights`` is 0 on padding and dropped rows; a task's
row weight is further multiplied by its ``where`` task's 0/1 label and its ``weight_column``. Every
loss is a mean over the task's weighted rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from recsys_mtl.tasks.graph import TaskSpec, by_name, chain

_LOG_HALF = -math.log(2.0)
_MAX_LOG_P = -1e-7  # keeps log(1 - p) finite when p rounds to 1


def log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(log_p)) for log_p < 0, accurate on both sides of log 1/2 (Maechler, 2012)."""
    return torch.where(log_p > _LOG_HALF, torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p)))


def chain_log_prob(tasks: list[TaskSpec], name: str, logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """log p(name) over the entire space: Σ log σ(logit_k) over the funnel chain root -> ... -> name,
    so a product of many small conditionals keeps its precision (ESMM, ESM² for longer chains). ``[B]``"""
    return torch.stack([F.logsigmoid(logits[t.name]) for t in chain(tasks, name)]).sum(dim=0)


def regression_target(task: TaskSpec, label: torch.Tensor) -> torch.Tensor:
    """What a regression tower fits: ``transform(scale x label)``. ``[B] -> [B]``"""
    scaled = label * task.scale
    return torch.log1p(scaled) if task.transform == "log1p" else scaled


def row_weights(
    task: TaskSpec, labels: dict[str, torch.Tensor], weights: torch.Tensor, sample_weights: dict[str, torch.Tensor] | None
) -> torch.Tensor:
    """The task's weight per row: real rows, inside its ``where`` space, times its ``weight_column``."""
    w = weights
    if task.where is not None:
        w = w * labels[task.where]
    if task.weight_column is not None:  # decided by the spec, not the dict: the train pipeline fx-traces this
        w = w * sample_weights[task.name]  # type: ignore[index]
    return w


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp(min=1e-6)


def task_loss(tasks: list[TaskSpec], task: TaskSpec, logits: dict[str, torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    """One task's per-row loss. ``{task: [B]}, [B] -> [B]``"""
    logit = logits[task.name]
    if task.type == "binary":
        if task.after is None:
            return F.binary_cross_entropy_with_logits(logit, label, reduction="none")
        # a funnel stage: BCE of the entire-space product p(root) x ... x p(self | parent), on every row
        log_p = chain_log_prob(tasks, task.name, logits).clamp(max=_MAX_LOG_P)
        return -(label * log_p + (1 - label) * log1mexp(log_p))
    if task.type == "regression":
        return (logit - regression_target(task, label)) ** 2
    # weighted logistic regression (YouTube): positives weighted by the (scaled) label, negatives by 1,
    # so the learned odds exp(logit) estimate E[scale x label]
    positive = (label > 0).to(logit.dtype)
    importance = torch.where(label > 0, label * task.scale, torch.ones_like(label))
    return F.binary_cross_entropy_with_logits(logit, positive, reduction="none") * importance


def task_losses(
    tasks: list[TaskSpec],
    logits: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor],
    weights: torch.Tensor,
    sample_weights: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """``{task: scalar loss}`` (not yet multiplied by the task weight). Shapes: ``[B]`` everywhere;
    ``sample_weights`` holds the tasks with a ``weight_column``."""
    index = by_name(tasks)
    out = {}
    for name, task in index.items():
        w = row_weights(task, labels, weights, sample_weights)
        out[name] = _weighted_mean(task_loss(tasks, task, logits, labels[name]), w)
    return out
