"""PCGrad (Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task Learning",
NeurIPS 2020), on the shared dense parameters.

For each task i, in a random order over the other tasks j: if g_i · g_j < 0, remove from g_i its
component along g_j (g_i ← g_i − (g_i·g_j / ‖g_j‖²) g_j). The update is the sum of the projected
gradients. With two tasks the result never opposes either original gradient.

The task gradients are averaged over ranks before projecting (the projection of the global
gradients, not an average of local projections), the random order comes from a generator seeded by
the step, so every rank writes the same gradient. The embeddings and the towers get the ordinary
gradient of the weighted sum, from the step's single backward pass (the embedding update is fused
into it).
"""

from __future__ import annotations

from typing import Any

import torch

from recsys_mtl.balancing.base import Balancer, SharedParameters, mean_over_ranks
from recsys_mtl.balancing.gradients import add_to_grads, task_gradients
from recsys_mtl.tasks.graph import TaskSpec


def project_conflicting(grads: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """``[T, P] -> ([P], conflicts)``: the sum of the projected task gradients, and how many (i, j)
    projections were made."""
    projected = grads.clone()
    conflicts = 0
    num_tasks = grads.shape[0]
    for i in range(num_tasks):
        for j in torch.randperm(num_tasks, generator=generator).tolist():
            if j == i:
                continue
            dot = projected[i] @ grads[j]
            if dot < 0:
                projected[i] -= dot / grads[j].pow(2).sum().clamp(min=1e-20) * grads[j]
                conflicts += 1
    return projected.sum(dim=0), conflicts


class PCGrad(Balancer):
    def __init__(self, tasks: list[TaskSpec], seed: int = 0):
        super().__init__(tasks)
        self.seed = seed
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def backward(self, losses: torch.Tensor, shared: SharedParameters, regulariser: torch.Tensor | None = None) -> dict[str, Any]:
        weighted = self.initial_weights * losses  # [T]
        grads = task_gradients(weighted, shared.all, mean_over_ranks)  # [T, P]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps))
        surgery, conflicts = project_conflicting(grads, generator)
        self.total(losses, regulariser).backward()  # embeddings, towers; DDP all-reduces
        # the shared gradients' plain sum becomes the projected one; a regulariser's gradient, not a
        # task's, stays in them unprojected
        add_to_grads(shared.all, surgery - grads.sum(dim=0))
        self.steps += 1
        return {"pcgrad_conflicts": conflicts}
