"""MetaBalance (He, Feng, Tian, Kohli, Lin & Tan, "MetaBalance: Improving Multi-Task Recommendations
via Adapting Gradient Magnitudes of Auxiliary Tasks", WWW 2022).

One task is the target, the others are auxiliary. For every shared tensor θ and task i, with
g_i = ∇_θ w_i·L_i, the moving average of its gradient norm

    m_i ← β m_i + (1 − β) ‖g_i‖

rescales each auxiliary gradient towards the target's magnitude,

    g_i ← r · (m_target / m_i) · g_i + (1 − r) · g_i,

and θ's gradient is the sum of the (rescaled) task gradients. r (relax) = 0 is the plain weighted sum;
r = 1 gives every auxiliary gradient the target's (averaged) magnitude on that tensor.

Verified against ``facebookresearch/MetaBalance`` metabalance.py: the per-tensor EMA of ``torch.norm``
starting at 0, the update order (EMA, then rescale with the new m), r = 0.7, β = 0.9, the target's own
scale m_0/m_0 = 1. Fixed from it: a parameter without a gradient no longer ends the pass over the
others (its task gradient counts as zero), a zero moving average leaves the (zero) gradient alone
instead of dividing by it, and the averages are a registered buffer, so checkpoints carry them.

The task gradients are taken with ``task_gradients`` and averaged over ranks, so every rank computes the
same averages and scales. The step's one backward pass is the plain weighted sum (the embeddings, which
the per-task passes cannot reach, and the towers keep that gradient); then Σ_i (s_i − 1) g_i is added to
each shared tensor's ``.grad``, turning its Σ_i g_i into Σ_i s_i g_i (a backbone regulariser's gradient
stays in it unscaled). ``num_tensors``: the model's shared dense tensors (the averages' checkpointed
shape, known when the model is built).
"""

from __future__ import annotations

from typing import Any

import torch

from recsys_mtl.balancing.base import Balancer, SharedParameters, mean_over_ranks
from recsys_mtl.balancing.gradients import add_to_grads, task_gradients
from recsys_mtl.tasks.graph import TaskSpec


def metabalance_scales(averages: torch.Tensor, target: int, relax: float) -> torch.Tensor:
    """``[T, K]`` moving-average norms -> ``[T, K]`` the factor each task's gradient on each tensor is
    multiplied by (1 for the target)."""
    ratio = torch.where(averages > 0, averages[target] / averages.clamp(min=torch.finfo(averages.dtype).tiny), 1.0)
    scales = relax * ratio + (1 - relax)
    scales[target] = 1.0
    return scales


class MetaBalance(Balancer):
    def __init__(self, tasks: list[TaskSpec], num_tensors: int, target: int = 0, relax: float = 0.7, beta: float = 0.9):
        super().__init__(tasks)
        self.target = target
        self.relax = relax
        self.beta = beta
        self.register_buffer("norm_averages", torch.zeros(len(tasks), num_tensors))  # [T, K] m_i per tensor
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def backward(self, losses: torch.Tensor, shared: SharedParameters, regulariser: torch.Tensor | None = None) -> dict[str, Any]:
        if not shared.all:
            raise ValueError("metabalance needs shared dense parameters; this model has none")
        if len(shared.all) != self.norm_averages.shape[1]:
            raise ValueError(f"metabalance was built for {self.norm_averages.shape[1]} shared tensors; got {len(shared.all)}")
        grads = task_gradients(self.initial_weights * losses, shared.all, mean_over_ranks)  # [T, P]
        bounds = torch.tensor([0, *(p.numel() for p in shared.all)]).cumsum(0).tolist()
        norms = torch.stack([grads[:, a:b].norm(dim=1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)], dim=1)  # [T, K]
        averages = self.norm_averages
        averages.mul_(self.beta).add_(norms.to(averages), alpha=1 - self.beta)
        scales = metabalance_scales(averages, self.target, self.relax).to(grads)  # [T, K]
        self.total(losses, regulariser).backward()  # embeddings, towers; DDP all-reduces
        delta = torch.cat([(scales[:, k] - 1) @ grads[:, a:b] for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))])
        add_to_grads(shared.all, delta)
        self.steps += 1
        mean_scale = scales.mean(dim=1)
        return {"metabalance_mean_scale": dict(zip(self.task_names, mean_scale.tolist(), strict=True))}
