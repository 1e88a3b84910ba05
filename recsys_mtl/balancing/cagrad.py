"""Conflict-Averse Gradient descent (Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS 2021), on the shared dense parameters.

With g0 the mean task gradient, CAGrad takes the update d within a ball of radius c‖g0‖ around g0 that
maximises the worst task's improvement. Its dual is a problem over the simplex,

    w* = argmin_{w ∈ Δ}  g_wᵀ g0 + c‖g0‖ ‖g_w‖,    g_w = Σ_i w_i g_i,
    d  = g0 + (c‖g0‖ / ‖g_w*‖) g_w*,

so ‖d − g0‖ = c‖g0‖, and c = 0 gives g0. d = Σ_i c_i g_i with c_i = 1/T + λ w*_i.

As the authors' code (``Cranial-XIX/CAGrad`` nyuv2/utils.py, and LibMTL's ``weighting/CAGrad.py``)
does by default, the update written is d / (1 + c²) (``rescale=1``), times T "to match the sum loss"
(the authors' ``overwrite_grad``): with c = 0 the shared parameters get the plain weighted sum. Both
references solve the dual with scipy's SLSQP from w = 1/T; here it is projected gradient descent with
backtracking on the Gram matrix (T × T, float64, normalised by its mean diagonal), a fixed number of
steps from the same start: deterministic, no scipy. Only the tasks with a non-zero configured weight
take part (T counts those), so a switched-off task cannot absorb the simplex weight.

Under data parallelism the gradients are averaged over ranks first and c is broadcast from rank 0.
As with ``pcgrad``, the step's one backward pass is the plain weighted sum (embeddings and towers get
their ordinary gradient), then Σ_i (c_i − 1) g_i is added to the shared parameters' ``.grad`` (turning
Σ_i g_i into the CAGrad update, with the backbone regulariser's gradient left in it as it is).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from recsys_mtl.balancing.base import Balancer, SharedParameters, from_rank0, mean_over_ranks
from recsys_mtl.balancing.gradients import add_to_grads, task_gradients
from recsys_mtl.tasks.graph import TaskSpec


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of ``[T]`` onto {w ≥ 0, Σw = 1} (sort-based)."""
    u = torch.sort(v, descending=True).values
    excess = torch.cumsum(u, dim=0) - 1
    index = torch.arange(1, v.numel() + 1, dtype=v.dtype)
    rho = int((u - excess / index > 0).nonzero().max())
    return (v - excess[rho] / (rho + 1)).clamp(min=0)


def _solve_dual(gram: torch.Tensor, radius: float, steps: int) -> torch.Tensor:
    """argmin over the simplex of wᵀA b + radius·√(wᵀA w), b = 1/T: projected gradient descent with a
    backtracking step."""
    num_tasks = gram.shape[0]
    mean = torch.full((num_tasks,), 1.0 / num_tasks, dtype=gram.dtype)
    linear = gram @ mean

    def objective(w: torch.Tensor) -> float:
        return float(w @ linear + radius * (w @ gram @ w).clamp(min=0).add(1e-20).sqrt())

    w, value, step = mean.clone(), objective(mean), 1.0
    for _ in range(steps):
        grad = linear + radius * (gram @ w) / (w @ gram @ w).clamp(min=0).add(1e-20).sqrt()
        for _ in range(60):
            candidate = project_to_simplex(w - step * grad)
            moved = candidate - w
            new = objective(candidate)
            if new <= value + float(grad @ moved) + float(moved @ moved) / (2 * step):
                break
            step /= 2
        if new >= value or float(moved.abs().max()) < 1e-15:
            break
        w, value, step = candidate, new, min(step * 2, 1e6)
    return w


def cagrad_coefficients(grads: torch.Tensor, c: float, steps: int = 300) -> torch.Tensor:
    """``[T, P] -> [T]`` the coefficients of d = coefficients @ grads (mean scale: c = 0 gives 1/T each)."""
    num_tasks = grads.shape[0]
    mean = torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
    gram = (grads @ grads.T).detach().to("cpu", torch.float64)
    scale = float(gram.diagonal().mean())
    if c == 0 or scale <= 0:
        return mean.to(grads)
    gram = gram / scale
    g0_norm = math.sqrt(max(float(mean @ gram @ mean), 0.0))
    w = _solve_dual(gram, c * g0_norm, steps)
    gw_norm = math.sqrt(max(float(w @ gram @ w), 0.0))
    if g0_norm == 0 or gw_norm < 1e-12:  # tasks cancel exactly: d = g0
        return mean.to(grads)
    return (mean + c * g0_norm / gw_norm * w).to(grads)


class CAGrad(Balancer):
    def __init__(self, tasks: list[TaskSpec], c: float = 0.5):
        super().__init__(tasks)
        self.c = c

    def backward(self, losses: torch.Tensor, shared: SharedParameters, regulariser: torch.Tensor | None = None) -> dict[str, Any]:
        if not shared.all:
            raise ValueError("cagrad needs shared dense parameters; this model has none")
        grads = task_gradients(self.initial_weights * losses, shared.all, mean_over_ranks)  # [T, P]
        active = (self.initial_weights > 0).nonzero().flatten().tolist()
        written = torch.ones(len(self.task_names), dtype=grads.dtype, device=grads.device)
        if active:
            scale = len(active) / (1 + self.c**2)  # T · d / (1 + c²), the authors' rescale
            written[active] = scale * cagrad_coefficients(grads[active], self.c)
        written = from_rank0(written)
        self.total(losses, regulariser).backward()  # embeddings, towers; DDP all-reduces
        add_to_grads(shared.all, (written - 1) @ grads)
        return {"cagrad_coefficients": dict(zip(self.task_names, written.tolist(), strict=True))}
