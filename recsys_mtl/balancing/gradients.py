"""Per-task gradients of shared parameters, and the conflict report logged from them."""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import nn


def task_gradients(
    losses: torch.Tensor, params: list[nn.Parameter], reduce: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``[T] -> [T, P]``: row t is the gradient of ``losses[t]`` w.r.t. ``params``, flattened, reduced
    over ranks by ``reduce``.

    ``torch.autograd.grad`` with explicit inputs runs only the part of the graph between the losses
    and ``params``: it neither accumulates into ``.grad`` (so DDP's hooks stay quiet) nor reaches the
    embedding lookup (so the fused embedding optimizer does not fire). The graph is kept for the
    step's real backward pass.
    """
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)]))
    return reduce(torch.stack(rows))


def gradient_report(grads: torch.Tensor, names: list[str]) -> dict[str, dict[str, float]]:
    """Norms of the task gradients ``[T, P]`` and the cosine of every pair (negative: the tasks pull
    the shared parameters in conflicting directions)."""
    norms = grads.norm(dim=1)
    cosines = {
        f"{names[i]}~{names[j]}": float(F.cosine_similarity(grads[i], grads[j], dim=0))
        for i, j in combinations(range(len(names)), 2)
    }
    return {"task_grad_norm": {n: float(v) for n, v in zip(names, norms, strict=True)}, "task_grad_cosine": cosines}


@torch.no_grad()
def add_to_grads(params: list[nn.Parameter], delta: torch.Tensor) -> None:
    """Add the flat ``[P]`` ``delta`` to the ``.grad`` of ``params`` in place (DDP's gradients are views
    into its buckets)."""
    offset = 0
    for p in params:
        part = delta[offset : offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
        if p.grad is None:
            p.grad = part.clone()
        else:
            p.grad.add_(part)
