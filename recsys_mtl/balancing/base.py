"""The balancer interface, the parameters it works on, and the fixed-weight strategy.

Notation: T tasks, P shared dense parameters (flattened). ``losses`` is ``[T]``, in task order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from recsys_mtl.tasks.graph import TaskSpec


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over all ranks (``t`` itself in a single process). Every rank gets the same
    reduced tensor, so values computed from it agree bit for bit across ranks."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def from_rank0(t: torch.Tensor) -> torch.Tensor:
    """``t`` as rank 0 has it (``t`` itself in a single process)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return t
    t = t.detach().clone()
    dist.broadcast(t, src=0)
    return t


@dataclass(frozen=True)
class SharedParameters:
    """What gradient-based strategies differentiate: ``all`` the dense parameters below the towers,
    and ``last``, the last layer every task reads (GradNorm's W)."""

    all: list[nn.Parameter]
    last: list[nn.Parameter]


class Balancer(nn.Module):
    """Combines the task losses and runs the step's one backward pass.

    ``initial_weights`` are the configured ``tasks[].weight``: the fixed weights, or the prior /
    starting point of a strategy that adapts them.
    """

    def __init__(self, tasks: list[TaskSpec]):
        super().__init__()
        self.task_names = [t.name for t in tasks]
        self.register_buffer("initial_weights", torch.tensor([t.weight for t in tasks], dtype=torch.float32))

    def weights(self) -> torch.Tensor:
        """``[T]`` what each task's loss is multiplied by right now (for the log)."""
        return self.initial_weights

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        """``[T] -> []`` the loss to back-propagate."""
        return (self.weights() * losses).sum()

    def total(self, losses: torch.Tensor, regulariser: torch.Tensor | None) -> torch.Tensor:
        """``[T] -> []`` the combined task losses plus the backbone's own loss term, if any (added as
        it is: a regulariser is not a task to balance)."""
        combined = self.combine(losses)
        return combined if regulariser is None else combined + regulariser

    def backward(self, losses: torch.Tensor, shared: SharedParameters, regulariser: torch.Tensor | None = None) -> dict[str, Any]:
        """Back-propagate ``losses`` (``[T]``, attached to the graph) and the backbone's ``regulariser``
        (``[]`` or None) once; update the strategy's own state; return what it wants logged (floats or
        ``{task: float}``)."""
        self.total(losses, regulariser).backward()
        return {}


class FixedWeights(Balancer):
    """The weighted sum with the configured weights."""
