"""Which adapters each task reads: the dense part of an adapted model runs once per group of tasks that
read the same adapted weights (``models.adapters``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from recsys_mtl.modules.lora import adapter_state


@dataclass(frozen=True)
class Group:
    """One run of the dense part: adapters ``enabled`` (off: exactly the frozen base) with the path of
    adapted task ``task`` (task-conditioned kinds), read by the model's tasks ``rows``."""

    enabled: bool
    task: int | None
    rows: tuple[int, ...]


@dataclass(frozen=True)
class Routing:
    """Groups covering every task once. A task the adapters do not serve reads the base run, so its output
    is exactly the frozen model's; each task-conditioned adapted task reads a run with its own path."""

    groups: tuple[Group, ...]

    def run(self, model: nn.Module, represent: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``represent: () -> [T, B, H]`` once per group, task t's row taken from its group's run: ``[T, B, H]``."""
        parts, rows = [], []
        for group in self.groups:
            with adapter_state(model, group.enabled, group.task):
                parts.append(represent()[list(group.rows)])
            rows += group.rows
        order = [rows.index(t) for t in range(len(rows))]
        return torch.cat(parts)[order]
