"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive
Loss Balancing in Deep Multitask Networks", ICML 2018).

With learned weights w_t, G_t = ‖∇_W w_t·L_t‖ the gradient norm of each weighted task loss at the
last shared layer W, L̃_t = L_t / L_t(0) the loss ratio and r_t = L̃_t / mean(L̃) the relative inverse
training rate, the weights descend

    L_grad = Σ_t | G_t − mean(G) · r_t^α |

with the target mean(G)·r_t^α held constant, so a task whose loss falls slowest (large r_t) gets a
larger gradient share; then they are renormalised to their initial sum. α sets how hard the training
rates are pulled together (0: equal gradient norms).

Under data parallelism the per-task gradients at W and the losses are averaged over ranks first (the
gradients DDP would produce), and the update is computed from those identical values on every rank,
so the ranks' weights agree bit for bit. The weights take Adam steps; their state is in buffers, so
checkpoints carry it.
"""

from __future__ import annotations

from typing import Any

import torch

from recsys_mtl.balancing.base import Balancer, SharedParameters, mean_over_ranks
from recsys_mtl.balancing.gradients import task_gradients
from recsys_mtl.tasks.graph import TaskSpec

_BETAS = (0.9, 0.999)
_EPS = 1e-8
_MIN_WEIGHT = 1e-3


def gradnorm_weight_gradient(
    weights: torch.Tensor, norms: torch.Tensor, losses: torch.Tensor, initial_losses: torch.Tensor, alpha: float
) -> torch.Tensor:
    """∂L_grad/∂w, ``[T]``. ``norms`` are ‖∇_W L_t‖ of the unweighted losses (so G_t = w_t·norms_t);
    tasks with zero weight take no part."""
    active = weights > 0
    ratios = losses / initial_losses  # [T] L̃_t
    rates = ratios / ratios[active].mean()  # [T] r_t
    grad_norms = weights * norms  # [T] G_t
    target = grad_norms[active].mean() * rates**alpha
    return torch.where(active, torch.sign(grad_norms - target) * norms, torch.zeros_like(weights))


class GradNorm(Balancer):
    def __init__(self, tasks: list[TaskSpec], alpha: float, lr: float):
        super().__init__(tasks)
        self.alpha = alpha
        self.lr = lr
        self.register_buffer("task_weights", self.initial_weights.clone())
        self.register_buffer("initial_losses", torch.zeros(len(tasks)))  # L_t(0), set at the first step
        self.register_buffer("adam_m", torch.zeros(len(tasks)))
        self.register_buffer("adam_v", torch.zeros(len(tasks)))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def weights(self) -> torch.Tensor:
        return self.task_weights

    def backward(self, losses: torch.Tensor, shared: SharedParameters, regulariser: torch.Tensor | None = None) -> dict[str, Any]:
        if not shared.last:
            raise ValueError("gradnorm needs a layer shared by all tasks; this model has none (no hidden or dense layers)")
        norms = task_gradients(losses, shared.last, mean_over_ranks).norm(dim=1)  # [T]
        self.total(losses, regulariser).backward()
        self.update(norms, mean_over_ranks(losses.detach()))
        return {"gradnorm_grad_norm": dict(zip(self.task_names, (self.task_weights * norms).tolist(), strict=True))}

    @torch.no_grad()
    def update(self, norms: torch.Tensor, losses: torch.Tensor) -> None:
        """One Adam step of the weights from this step's (rank-averaged) norms and losses."""
        if int(self.steps) == 0:
            self.initial_losses.copy_(losses.clamp(min=1e-12))
        grad = gradnorm_weight_gradient(self.task_weights, norms, losses, self.initial_losses, self.alpha)
        self.steps += 1
        t = int(self.steps)
        self.adam_m.mul_(_BETAS[0]).add_(grad, alpha=1 - _BETAS[0])
        self.adam_v.mul_(_BETAS[1]).addcmul_(grad, grad, value=1 - _BETAS[1])
        m_hat = self.adam_m / (1 - _BETAS[0] ** t)
        v_hat = self.adam_v / (1 - _BETAS[1] ** t)
        active = self.initial_weights > 0
        w = torch.where(active, (self.task_weights - self.lr * m_hat / (v_hat.sqrt() + _EPS)).clamp(min=_MIN_WEIGHT), 0.0)
        self.task_weights.copy_(w * self.initial_weights.sum() / w.sum())
