"""AITM: Adaptive Information Transfer Multi-task (Xi et al., KDD 2021, "Modeling the Sequential
Dependence among Audience Multi-step Conversions with Multi-task Learning in Targeted Display
Advertising"; reference code xidongbo/AITM) for funnels: each stage's tower reads what the stage above
it learned.

For a task t below a task p (``after: p``), with ``q_t`` ``[B, K]`` its tower's hidden output and
``z_p`` the representation p's head reads: the transferred ``p = relu(W z_p)`` and ``q_t`` are mixed
by the Adaptive Information Transfer attention, ``z_t = Σ_u w_u h3(u)`` over ``u ∈ {p, q_t}`` with
``w = softmax_u(<h1(u), h2(u)> / sqrt(K))``; t's head reads ``z_t``. A task above no other reads its
own ``q``.

The paper's behavioural expectation calibrator (a penalty on a later stage's probability exceeding
the earlier one's) is not needed here: an ``after`` stage's prediction is p(parent) x p(stage | parent)
(``recsys_mtl.tasks``), never above p(parent) by construction.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class InformationTransfer(nn.Module):
    """``([B, K] own q, [B, K] the parent's z) -> [B, K]`` one stage's AIT unit."""

    def __init__(self, dim: int):
        super().__init__()
        self.transfer = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.h1, self.h2, self.h3 = (nn.Linear(dim, dim) for _ in range(3))

    def forward(self, q: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
        """``([B, K], [B, K]) -> [B, K]``"""
        u = torch.stack([self.transfer(parent), q], dim=1)  # [B, 2, K]
        scores = (self.h1(u) * self.h2(u)).sum(dim=-1) / math.sqrt(u.shape[-1])  # [B, 2]
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)  # [B, 2, 1]
        return (weights * self.h3(u)).sum(dim=1)


class AITM(nn.Module):
    """``{task: [B, K] q} -> {task: [B, K] z}`` over the funnel ``parents`` (``{task: the task it is
    after}``), parents first."""

    def __init__(self, parents: dict[str, str], dim: int):
        super().__init__()
        self.parents = parents
        self.units = nn.ModuleDict({task: InformationTransfer(dim) for task in parents})

    def forward(self, q: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{task: [B, K]} -> {task: [B, K]}``"""
        z: dict[str, torch.Tensor] = {}

        def resolve(task: str) -> torch.Tensor:
            if task not in z:
                parent = self.parents.get(task)
                z[task] = q[task] if parent is None else self.units[task](q[task], resolve(parent))
            return z[task]

        for task in q:
            resolve(task)
        return z
