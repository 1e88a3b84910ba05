"""Gradient Vaccine (Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021), on the shared dense parameters
as one group (LibMTL's ``GradVac_group_type=0``).

Each pair of tasks (i, j) keeps a cosine goal φ̂_ij, an EMA of the cosine observed along training
(starting at 0). For each task i, over the other tasks j in a random order: with φ_ij = cos(g_i', g_j)
the cosine of i's (already adjusted) gradient with j's original gradient,

    if φ_ij < φ̂_ij:  g_i' ← g_i' + ‖g_i'‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)) · g_j
    φ̂_ij ← (1−β) φ̂_ij + β φ_ij

and the update is Σ_i g_i'. The adjustment puts g_i' at exactly cosine φ̂_ij with g_j. With β = 0 the
goals stay 0 and this is PCGrad (the projection when φ_ij < 0), given the same order.

Verified against LibMTL's ``weighting/GradVac.py``: the adjustment formula, β = 0.5, goals starting at
0, φ measured on the adjusted g_i' against the original g_j. LibMTL updates φ̂ only inside the ``if``
(so a goal can only fall); here φ̂ is updated at every pair, as the paper's description of φ̂ as an EMA of
the observed similarity reads (the paper's Algorithm 1 could not be consulted verbatim: assumed). A
pair where either gradient is zero is skipped (no information, and the formula would divide by 0).

Every adjusted gradient is a combination of the original ones, so the update is d = Σ_i c_i g_i with
task coefficients c (PCGrad and CAGrad alike). The rank-averaged gradients give the same c on every
rank; c and the new goals are also broadcast from rank 0 so the ranks cannot drift apart. The step's
one backward pass is the plain weighted sum (embeddings and towers get their ordinary gradient, as with
``pcgrad``); then Σ_i (c_i − 1) g_i is added to the shared parameters' ``.grad``, which turns their
Σ_i g_i into d and leaves the backbone regulariser's gradient in it unprojected.
"""

from __future__ import annotations

from typing import Any

import torch

from recsys_mtl.balancing.base import Balancer, SharedParameters, from_rank0, mean_over_ranks
from recsys_mtl.balancing.gradients import add_to_grads, task_gradients
from recsys_mtl.tasks.graph import TaskSpec


def vaccinate(
    grads: torch.Tensor, goals: torch.Tensor, beta: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``([T, P], [T, T]) -> (c [T], new goals [T, T], adjustments)``: Σ_i g_i' = c @ grads."""
    num_tasks = grads.shape[0]
    adjusted = grads.clone()
    coefficients = torch.eye(num_tasks, dtype=grads.dtype, device=grads.device)  # g_i' = C[i] @ grads
    goals = goals.clone()
    squares = grads.pow(2).sum(dim=1)  # [T] ‖g_j‖²
    adjustments = 0
    for i in range(num_tasks):
        for j in torch.randperm(num_tasks, generator=generator).tolist():
            if j == i:
                continue
            own = adjusted[i].norm()
            if own == 0 or squares[j] == 0:
                continue
            dot = adjusted[i] @ grads[j]
            cosine = (dot / (own * squares[j].sqrt())).clamp(-1.0, 1.0)
            goal = goals[i, j]
            if cosine < goal:
                sin_goal = (1 - goal**2).clamp(min=1e-12).sqrt()
                # ‖g_i'‖ φ̂ √(1−φ²) / (‖g_j‖ √(1−φ̂²)) − (g_i'·g_j) / ‖g_j‖²  (the paper's formula, φ‖g_i'‖ = g_i'·g_j / ‖g_j‖)
                w = own * goal * (1 - cosine**2).clamp(min=0).sqrt() / (squares[j].sqrt() * sin_goal) - dot / squares[j]
                adjusted[i] += w * grads[j]
                coefficients[i, j] += w
                adjustments += 1
            goals[i, j] = (1 - beta) * goal + beta * cosine
    return coefficients.sum(dim=0), goals, adjustments


class GradVac(Balancer):
    def __init__(self, tasks: list[TaskSpec], beta: float = 0.5, seed: int = 0):
        super().__init__(tasks)
        self.beta = beta
        self.seed = seed
        self.register_buffer("goals", torch.zeros(len(tasks), len(tasks)))  # φ̂_ij
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def backward(self, losses: torch.Tensor, shared: SharedParameters, regulariser: torch.Tensor | None = None) -> dict[str, Any]:
        if not shared.all:
            raise ValueError("gradvac needs shared dense parameters; this model has none")
        grads = task_gradients(self.initial_weights * losses, shared.all, mean_over_ranks)  # [T, P]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps))
        c, goals, adjustments = vaccinate(grads, self.goals.to(grads), self.beta, generator)
        agreed = from_rank0(torch.cat([c[None], goals]))  # [1 + T, T]
        self.total(losses, regulariser).backward()  # embeddings, towers; DDP all-reduces
        add_to_grads(shared.all, (agreed[0] - 1) @ grads)  # Σ g_i (+ regulariser) -> d (+ regulariser)
        self.goals.copy_(agreed[1:])
        self.steps += 1
        return {"gradvac_adjustments": adjustments, "gradvac_coefficients": dict(zip(self.task_names, agreed[0].tolist(), strict=True))}
