"""Soft parameter sharing by regularisation: one column per task, identical architectures, no mixing; a
penalty on the distance between the columns' corresponding weights makes them share softly.

``penalty="l2"``: Duong, Cohn, Bird, Cook, ACL 2015, "Low Resource Dependency Parsing: Cross-lingual
Parameter Sharing in a Neural Network Parser": ``strength * sum_{t<u} sum_layers ||W_t - W_u||_F^2``.
``penalty="trace"``: Yang & Hospedales, ICLR 2017 workshop, "Trace Norm Regularised Deep Multi-Task
Learning", last-axis-flattening (LAF) form: per layer, the T flattened weights stacked as ``[T, P]``,
``strength * sum_layers ||stack||_*`` (nuclear norm: low rank across tasks = shared structure).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from recsys_mtl.modules.backbones import Backbone
from recsys_mtl.modules.mlp import MLP


class SoftSharing(Backbone):
    """T task columns ``make_column(in_dim)`` (MLPs of one architecture) and a penalty tying their weights.

    The penalty covers the Linear weight matrices only, not the biases: both papers state it on weight
    matrices (Duong et al. tie the hidden-layer weights and the POS/arc-label embeddings; Yang & Hospedales
    stack the layers' weight matrices), and a bias is a cheap per-task offset best left free.
    A very large ``strength`` makes the columns equal (hard sharing); 0 makes them independent.
    """

    def __init__(
        self,
        in_dim: int,
        make_column: Callable[[int], MLP],
        num_tasks: int,
        strength: float = 1e-3,
        penalty: Literal["l2", "trace"] = "l2",
    ):
        super().__init__()
        if penalty not in ("l2", "trace"):
            raise ValueError(f"unknown penalty {penalty!r}; expected 'l2' or 'trace'")
        self.columns = nn.ModuleList(make_column(in_dim) for _ in range(num_tasks))
        shapes = [[tuple(w.shape) for w in self.column_weights(c)] for c in self.columns]
        if any(s != shapes[0] for s in shapes):
            raise ValueError("SoftSharing columns must have identical architectures")
        self.num_tasks = num_tasks
        self.strength = strength
        self.penalty = penalty
        self.out_dim = self.columns[0].out_dim

    @staticmethod
    def column_weights(column: nn.Module) -> list[torch.Tensor]:
        """The column's Linear weights ``[out, in]``, in layer order."""
        return [m.weight for m in column.modules() if isinstance(m, nn.Linear)]

    def last_shared_layer(self) -> list[nn.Module]:
        """None: every column belongs to one task (the penalty ties them, nothing is shared)."""
        return []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Din] -> [T, B, H]``"""
        return torch.stack([column(x) for column in self.columns])

    def regulariser(self) -> torch.Tensor | None:
        """``[]`` the tying penalty over corresponding weights; None when ``strength == 0`` or T == 1."""
        if not self.strength or self.num_tasks < 2:
            return None
        per_column = [self.column_weights(c) for c in self.columns]
        terms = []
        for layer in zip(*per_column, strict=True):  # the T tasks' weights of one layer
            stack = torch.stack([w.reshape(-1) for w in layer])  # [T, P]
            if self.penalty == "trace":
                terms.append(torch.linalg.matrix_norm(stack, ord="nuc"))
            else:
                for t in range(len(layer)):
                    for u in range(t + 1, len(layer)):
                        terms.append((stack[t] - stack[u]).square().sum())
        return self.strength * torch.stack(terms).sum()
