"""Soft parameter sharing by regularisation: one column per task, identical architectures, no mixing; a
penalty on the distance between the columns' corresponding weights makes them share softly.

``penalty="l2"``: Duong, Cohn, Bird, Cook, ACL 2015, "Low Resource Dependency Parsing: Cross-lingual
Parameter Sharing in a Neural Network Parser": ``strength * sum_{t<u} sum_layers ||W_t - W_u||_F^2``.
``penalty="trace"``: Yang & Hospedales, ICLR 2017 workshop, "Trace Norm Regularised Deep Multi-Task
Learning", last-axis-flattening (LAF) form: per layer, the T flattened weights stacked as ``[T, P]``,
``strength * sum_layers ||stack||_*`` (nuclear norm: low rank across tasks = shared structure).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from recsys_mtl.modules.backbones import Backbone, ExpertFactory
from recsys_mtl.modules.task_layout import TaskLayout, bank


class SoftSharing(Backbone):
    """T task columns of one architecture (one batched bank, ``make_columns(in_dim, T)``) and a penalty
    tying their weights.

    The penalty covers the Linear weight matrices only, not the biases: both papers state it on weight
    matrices (Duong et al. tie the hidden-layer weights and the POS/arc-label embeddings; Yang & Hospedales
    stack the layers' weight matrices), and a bias is a cheap per-task offset best left free.
    A very large ``strength`` makes the columns equal (hard sharing); 0 makes them independent.
    """

    def __init__(
        self,
        in_dim: int,
        make_columns: ExpertFactory,
        num_tasks: int,
        strength: float = 1e-3,
        penalty: Literal["l2", "trace"] = "l2",
    ):
        super().__init__()
        if penalty not in ("l2", "trace"):
            raise ValueError(f"unknown penalty {penalty!r}; expected 'l2' or 'trace'")
        self.columns = make_columns(in_dim, num_tasks)
        self.num_tasks = num_tasks
        self.strength = strength
        self.penalty = penalty
        self.out_dim = self.columns.out_dim

    def last_shared_layer(self) -> list[nn.Module]:
        """None: every column belongs to one task (the penalty ties them, nothing is shared)."""
        return []

    def task_layout(self) -> TaskLayout:
        """Task t's column: expert t of the bank."""
        return TaskLayout(bank("columns", len(self.columns.layers), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Din] -> [T, B, H]``"""
        return self.columns(x)

    def regulariser(self) -> torch.Tensor | None:
        """``[]`` the tying penalty over corresponding weights; None when ``strength == 0`` or T == 1."""
        if not self.strength or self.num_tasks < 2:
            return None
        terms = []
        for weight in self.columns.weights():  # [T, O, I]: the T tasks' weights of one layer
            stack = weight.reshape(self.num_tasks, -1)  # [T, P]
            if self.penalty == "trace":
                terms.append(torch.linalg.matrix_norm(stack, ord="nuc"))
            else:
                for t in range(self.num_tasks):
                    for u in range(t + 1, self.num_tasks):
                        terms.append((stack[t] - stack[u]).square().sum())
        return self.strength * torch.stack(terms).sum()
