"""Sluice networks (Ruder, Bingel, Augenstein, Søgaard, AAAI 2019, "Latent Multi-task Architecture
Learning"); reference code: sebastianruder/sluice-networks (``predictors.py``, ``sluice_net.py``).

One column per task. Every layer's output of every task is split into S equal subspaces along the hidden
dim; after every layer a learned ``alpha`` of shape ``[T*S, T*S]`` mixes all the tasks' subspaces (a
cross-stitch unit over subspaces). Per task, ``beta`` weighs the K layers' mixed outputs for the readout
(the paper's layer-stitch units; no softmax). An orthogonality penalty pushes each task's subspaces apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from recsys_mtl.modules.backbones import Backbone
from recsys_mtl.modules.task_layout import TaskLayout, per_task

LayerFactory = Callable[[int, int], nn.Module]  # (in_dim, out_dim) -> layer, e.g. MLP(in_dim, [out_dim])


def output_linear(layer: nn.Module) -> nn.Linear:
    """The Linear that produces ``layer``'s output (its last Linear; the only one for ``MLP(i, [o])``)."""
    linears = [m for m in layer.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"the orthogonality penalty needs an nn.Linear inside {type(layer).__name__}")
    return linears[-1]


class Sluice(Backbone):
    """Sluice network over T task columns of K layers ``make_layer(width, dims[k])``.

    ``alpha_init``: "balanced" (every entry ``1/(T*S)``, the reference's default for the cross-stitch
    units) or "identity" (``I``: independent columns). ``beta`` starts with 0.9 on the last layer and
    ``0.1/(K-1)`` on each other one (the reference's default "imbalanced" layer-stitch init; 1.0 if K=1).
    All ``dims`` must be equal so that the readout can sum the layers' outputs; H = ``dims[-1]``.
    ``regulariser()``: ``orthogonality * sum_layers sum_tasks sum_{s<r} ||G_s^T G_r||_F^2``, G_s the rows
    of the weight of the layer's output Linear that produce subspace s (``[H/S, in]``).
    """

    def __init__(
        self,
        in_dim: int,
        dims: list[int],
        num_tasks: int,
        make_layer: LayerFactory,
        subspaces: int = 2,
        orthogonality: float = 0.1,
        alpha_init: Literal["balanced", "identity"] = "balanced",
    ):
        super().__init__()
        if not dims:
            raise ValueError("Sluice needs at least one layer")
        for k, dim in enumerate(dims):
            if dim % subspaces:
                raise ValueError(f"Sluice layer {k}: width {dim} is not divisible by subspaces={subspaces}")
        if len(set(dims)) > 1:
            raise ValueError(f"Sluice needs equal widths for its beta readout over layers, got dims={dims}")
        n = num_tasks * subspaces
        if alpha_init == "balanced":
            alpha = torch.full((n, n), 1.0 / n)
        elif alpha_init == "identity":
            alpha = torch.eye(n)
        else:
            raise ValueError(f"unknown alpha_init {alpha_init!r}; expected 'balanced' or 'identity'")
        self.columns = nn.ModuleList()
        self.alphas = nn.ParameterList()
        width = in_dim
        for dim in dims:
            self.columns.append(nn.ModuleList(make_layer(width, dim) for _ in range(num_tasks)))
            self.alphas.append(nn.Parameter(alpha.clone()))
            width = dim
        k = len(dims)
        beta = torch.full((num_tasks, k), 0.1 / (k - 1) if k > 1 else 0.0)
        beta[:, -1] = 0.9 if k > 1 else 1.0
        self.betas = nn.Parameter(beta)  # [T, K]
        self.num_tasks = num_tasks
        self.subspaces = subspaces
        self.orthogonality = orthogonality
        self.out_dim = width
        if orthogonality:
            for k, layers in enumerate(self.columns):
                if output_linear(layers[0]).out_features != dims[k]:
                    raise ValueError(f"Sluice layer {k}: the last Linear of make_layer must output dims[{k}]")

    def last_shared_layer(self) -> list[nn.Module]:
        """None: every column belongs to one task; alpha and beta only mix them."""
        return []

    def task_layout(self) -> TaskLayout:
        """Task t's column at every layer, its S rows and columns of every alpha, its row of beta."""
        alphas = per_task(self.subspaces, *(f"alphas.{i}" for i in range(len(self.alphas))), dims=(0, 1))
        return TaskLayout(alphas | per_task(1, "betas"), tuple(f"columns.{i}" for i in range(len(self.columns))))

    def mix(self, alpha: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``([T*S, T*S], [T, B, H]) -> [T, B, H]``: subspace s of task t reads row ``t*S + s`` of alpha
        applied to all tasks' subspaces (subspace s = hidden units ``s*H/S : (s+1)*H/S``)."""
        t, b, width = h.shape
        s = self.subspaces
        chunks = h.reshape(t, b, s, width // s).permute(0, 2, 1, 3).reshape(t * s, b, width // s)
        mixed = torch.einsum("ij,jbd->ibd", alpha, chunks)  # [T*S, B, H/S]
        return mixed.reshape(t, s, b, width // s).permute(0, 2, 1, 3).reshape(t, b, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Din] -> [T, B, H]``"""
        h = x.unsqueeze(0).expand(self.num_tasks, -1, -1)  # [T, B, Din]
        outs = []
        for layers, alpha in zip(self.columns, self.alphas, strict=True):
            h = torch.stack([layer(h[t]) for t, layer in enumerate(layers)])  # [T, B, H]
            h = self.mix(alpha, h)
            outs.append(h)
        return torch.einsum("tk,ktbh->tbh", self.betas, torch.stack(outs))  # beta over the K mixed outputs

    def regulariser(self) -> torch.Tensor | None:
        """``[]`` the subspace orthogonality penalty; None when ``orthogonality == 0`` or S == 1."""
        if not self.orthogonality or self.subspaces == 1:
            return None
        terms = []
        for layers in self.columns:
            for layer in layers:
                weight = output_linear(layer).weight  # [H, in]
                g = weight.reshape(self.subspaces, weight.shape[0] // self.subspaces, weight.shape[1])
                for s in range(self.subspaces):
                    for r in range(s + 1, self.subspaces):
                        terms.append((g[s].T @ g[r]).square().sum())
        return self.orthogonality * torch.stack(terms).sum()
