"""Uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
Losses for Scene Geometry and Semantics", CVPR 2018).

Each task t has a learned log-variance s_t = log σ_t². From the task likelihoods:

* regression (Gaussian): L_t / (2σ²) + log σ  =  ½·exp(−s)·L_t + ½·s
* classification (Bernoulli with a temperature 1/σ² on the logit): L_t / σ² + log σ  =  exp(−s)·L_t + ½·s

so a noisy (or large-scale) task is down-weighted and the ½·s term keeps σ from growing without
bound. s is an ordinary dense parameter: the dense optimizer updates it and DDP keeps it identical
on every rank. The configured task weight multiplies the whole term (0 switches a task off).
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_mtl.balancing.base import Balancer
from recsys_mtl.tasks.graph import TaskSpec


class UncertaintyWeighting(Balancer):
    def __init__(self, tasks: list[TaskSpec]):
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(tasks)))  # [T] s_t, starting at σ = 1
        self.register_buffer("scale", torch.tensor([0.5 if t.is_regression else 1.0 for t in tasks]))

    def weights(self) -> torch.Tensor:
        return (self.initial_weights * self.scale * torch.exp(-self.log_vars)).detach()

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        per_task = self.scale * torch.exp(-self.log_vars) * losses + 0.5 * self.log_vars  # [T]
        return (self.initial_weights * per_task).sum()
