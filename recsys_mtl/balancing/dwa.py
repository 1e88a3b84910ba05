"""Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention",
CVPR 2019).

    w_t = K · exp(r_t / T) / Σ_i exp(r_i / T),   r_t = L̄_t(n−1) / L̄_t(n−2)

where L̄(n) is a task's mean loss over window n. The paper's windows are epochs; a ranking job often
trains one epoch, so here a window is ``window_steps`` steps. The first two windows use the initial
weights. A task whose loss stopped falling (r near 1) gets more weight than one still falling fast;
T flattens the weights (T → ∞: equal). With configured weights w⁰ the softmax is weighted by them
and K = Σ w⁰ (the paper's formula when all w⁰ = 1).

Window means are taken over the rank-averaged losses, so every rank computes the same weights.
"""

from __future__ import annotations

from typing import Any

import torch

from recsys_mtl.balancing.base import Balancer, SharedParameters, mean_over_ranks
from recsys_mtl.tasks.graph import TaskSpec


def dwa_weights(previous: torch.Tensor, before: torch.Tensor, initial: torch.Tensor, temperature: float) -> torch.Tensor:
    """``[T]`` weights from the last two window means ``previous`` (n−1) and ``before`` (n−2)."""
    rates = previous / before.clamp(min=1e-12)
    scores = initial * torch.exp((rates - rates.max()) / temperature)  # shifted: same softmax, no overflow
    return initial.sum() * scores / scores.sum()


class DynamicWeightAverage(Balancer):
    def __init__(self, tasks: list[TaskSpec], temperature: float, window_steps: int):
        super().__init__(tasks)
        self.temperature = temperature
        self.window_steps = window_steps
        self.register_buffer("task_weights", self.initial_weights.clone())
        self.register_buffer("window_sum", torch.zeros(len(tasks)))
        self.register_buffer("window_means", torch.zeros(2, len(tasks)))  # [n−2, n−1]
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def weights(self) -> torch.Tensor:
        return self.task_weights

    def backward(self, losses: torch.Tensor, shared: SharedParameters, regulariser: torch.Tensor | None = None) -> dict[str, Any]:
        self.total(losses, regulariser).backward()
        self.observe(mean_over_ranks(losses.detach()))
        return {}

    @torch.no_grad()
    def observe(self, losses: torch.Tensor) -> None:
        """Add one step's (rank-averaged) losses; at the end of a window, recompute the weights."""
        self.window_sum += losses
        self.steps += 1
        steps = int(self.steps)
        if steps % self.window_steps:
            return
        self.window_means[0] = self.window_means[1]
        self.window_means[1] = self.window_sum / self.window_steps
        self.window_sum.zero_()
        if steps >= 2 * self.window_steps:
            self.task_weights.copy_(dwa_weights(self.window_means[1], self.window_means[0], self.initial_weights, self.temperature))
