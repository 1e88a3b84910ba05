"""Sparse mixture-of-experts multi-task backbone: each task reads at most k of E shared experts.

Two routers:

- ``"topk"``: noisy top-k gating (Shazeer et al., ICLR 2017, "Outrageously Large Neural Networks"),
  one gate per task, with the Switch Transformer load-balancing loss (Fedus et al., JMLR 2022). Only
  the experts some task selected for a row run on that row, so the cost per sample grows with
  ``min(k * T, E)``, not with E.
- ``"dselect"``: DSelect-k (Hazimeh et al., NeurIPS 2021, "DSelect-k: Differentiable Selection in the
  Mixture of Experts with Applications to Multi-Task Learning"), its static (task-only, not
  per-example) variant: per task, k single-expert selectors built from smooth-step functions of
  ``ceil(log2 E)`` learnable logits, mixed by a softmax. Every row reads the same experts; experts with
  zero weight for every task (once the smooth-steps saturate) are skipped.

``regulariser()`` is stateful: it returns the term computed by the LAST training-mode ``forward`` (the
tensor is kept on the module, attached to that call's graph, until the next forward), None before any
training-mode forward, after an eval-mode forward, and whenever the module is in eval mode. The trainer
calls ``forward`` then ``regulariser()`` once per step and adds it to the loss before its one backward.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from recsys_mtl.modules.backbones import Backbone, ExpertFactory
from recsys_mtl.modules.task_layout import TaskLayout, linear, per_task

_EPS = 1e-6  # inside the selectors' entropy log, as in the DSelect-k reference implementation


def smooth_step(t: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """DSelect-k's smooth-step S: 0 for ``t <= -gamma/2``, 1 for ``t >= gamma/2``, else the cubic
    ``-2/gamma^3 t^3 + 3/(2 gamma) t + 1/2`` (C^1 at both ends, so the gradient is exactly 0 once
    saturated). Elementwise, any shape."""
    cubic = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return torch.where(t <= -gamma / 2, torch.zeros_like(t), torch.where(t >= gamma / 2, torch.ones_like(t), cubic))


class SparseMoE(Backbone):
    """Sparse MoE over E shared experts with one router per task (see the module docstring).

    ``router="topk"``: task t's gate logits are ``h = x W_g[t] + eps * softplus(x W_noise[t])`` with
    ``eps ~ N(0, 1)`` in training when ``noise`` (no noise in eval); the top-k logits are softmaxed, the
    others get weight 0. The regulariser is the Switch loss ``balance * E * sum_e f_e P_e`` averaged over
    tasks: ``f_e`` the fraction of the B*k (row, slot) choices that went to e, ``P_e`` the batch mean of
    ``softmax(h)`` over all E (before top-k, with the same noise the routing used). Since
    ``sum_e f_e = 1``, uniform router probabilities (``P_e = 1/E``) give exactly ``balance`` whatever f;
    concentrated routing gives up to ``balance * E / k``. ``W_g`` has nn.Linear's default init (the paper
    starts it at zero, which ties every logit in eval); ``W_noise`` (no bias) starts at zero as in the
    paper (noise std softplus(0) = 0.69).

    ``router="dselect"``: task t's expert weights are ``sum_i softmax(w[t])_i r(z[t, i])`` with
    ``r(z)_e = prod_j S(z_j) if bit j of e's binary code is 1 else 1 - S(z_j)``; z starts in
    U(-gamma/100, gamma/100), w in U(-0.05, 0.05) (the reference implementation's initialisers), gamma=1.
    With E a power of 2 the weights sum to 1; otherwise the codes >= E are unreachable, the weights sum
    to at most 1 and, as in the reference implementation, the regulariser adds
    ``sum_{t,i} 1 / sum_e r(z[t, i])_e`` to keep selectors off them. ``entropy_reg`` (keyword-only,
    default 0 = off) adds the paper's entropy term ``entropy_reg * sum_{t,i} H(r(z[t, i]))`` that speeds up
    convergence to exactly k experts. The regulariser is None when neither term applies; ``balance`` and
    ``noise`` are unused by this router, and it has no nn.Linear routers (static selection reads no x).
    """

    def __init__(
        self,
        in_dim: int,
        make_experts: ExpertFactory,
        num_experts: int,
        num_tasks: int,
        k: int = 2,
        router: Literal["topk", "dselect"] | str = "topk",
        noise: bool = True,
        balance: float = 1e-2,
        *,
        entropy_reg: float = 0.0,
    ):
        super().__init__()
        if not 1 <= k <= num_experts:
            raise ValueError(f"SparseMoE needs 1 <= k <= E, got k={k}, E={num_experts}")
        if router not in ("topk", "dselect"):
            raise ValueError(f"SparseMoE router must be 'topk' or 'dselect', got {router!r}")
        self.experts = make_experts(in_dim, num_experts)
        self.out_dim = self.experts.out_dim
        self.num_experts, self.num_tasks, self.k, self.router = num_experts, num_tasks, k, router
        self.noise, self.balance, self.entropy_reg = noise, balance, entropy_reg
        self._regulariser: torch.Tensor | None = None
        if router == "topk":
            # the T routers as one Linear (task t's logits are outputs t * E .. t * E + E - 1)
            self.routers = nn.Linear(in_dim, num_tasks * num_experts)
            self.noise_routers = nn.Linear(in_dim, num_tasks * num_experts, bias=False) if noise else None
            if self.noise_routers is not None:
                nn.init.zeros_(self.noise_routers.weight)
        else:
            bits = math.ceil(math.log2(num_experts))  # 0 for one expert: its weight is the empty product 1
            self.gamma = 1.0
            self.z_logits = nn.Parameter(torch.empty(num_tasks, k, bits).uniform_(-self.gamma / 100, self.gamma / 100))
            self.w_logits = nn.Parameter(torch.empty(num_tasks, k).uniform_(-0.05, 0.05))
            # row e: e's binary code, most significant bit first, over the first E of the 2^bits codes
            codes = [[(e >> (bits - 1 - j)) & 1 for j in range(bits)] for e in range(num_experts)]
            self.register_buffer("codes", torch.tensor(codes, dtype=torch.bool), persistent=False)

    def last_shared_layer(self) -> list[nn.Module]:
        """The experts' output layer (any expert may feed any task)."""
        return self.experts.last_linear()

    def task_layout(self) -> TaskLayout:
        """Task t's router (E logits of each router Linear) or its DSelect row of z and w logits."""
        if self.router == "dselect":
            return TaskLayout(per_task(1, "z_logits", "w_logits"))
        noise = {} if self.noise_routers is None else linear("noise_routers", self.num_experts, bias=False)
        return TaskLayout(linear("routers", self.num_experts) | noise)

    def regulariser(self) -> torch.Tensor | None:
        """``[]`` the routing loss of the last training-mode forward (see the module docstring); None
        in eval mode or before any training-mode forward."""
        return self._regulariser if self.training else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Din] -> [T, B, H]``; in training mode also stores this call's regulariser."""
        out, reg = self._topk(x) if self.router == "topk" else self._dselect(x)
        self._regulariser = reg if self.training else None
        return out

    def gate_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Din] -> [T, B, E]`` the top-k routers' logits h, noisy in training when ``noise``."""
        tasks = (x.shape[0], self.num_tasks, self.num_experts)
        logits = self.routers(x).view(tasks).transpose(0, 1)
        if self.training and self.noise_routers is not None:
            std = F.softplus(self.noise_routers(x)).view(tasks).transpose(0, 1)
            logits = logits + torch.randn_like(logits) * std
        return logits

    def _topk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, Din] -> ([T, B, H], [] | None)``: each expert runs on the rows some task routed to it.

        The (row, expert) pairs are laid out as one zero-padded block of C rows per used expert, C the
        most rows any expert got, and the bank runs on ``[A, C, Din]`` in one batched product: the work is
        ``A * C`` rows, about ``B * min(k * T, E)`` when the routing is balanced (what the Switch loss
        keeps it), not ``B * E``; experts no row chose get an exact zero gradient."""
        batch, num_experts = x.shape[0], self.num_experts
        logits = self.gate_logits(x)  # [T, B, E]
        top, idx = logits.topk(self.k, dim=-1)  # [T, B, k]
        gates = torch.zeros_like(logits).scatter(-1, idx, torch.softmax(top, dim=-1))  # [T, B, E]
        needed = torch.zeros(num_experts, batch, dtype=torch.bool, device=x.device)
        needed.scatter_(0, idx.permute(0, 2, 1).reshape(-1, batch), True)  # [E, B]: some task chose e
        experts, rows = needed.nonzero(as_tuple=True)  # [N] each, grouped by expert
        counts = needed.sum(1)  # [E]
        used = counts.nonzero().squeeze(1)  # [A]
        block = torch.zeros_like(counts).index_copy(0, used, torch.arange(len(used), device=x.device))[experts]  # [N]
        slot = torch.arange(len(rows), device=x.device) - (counts.cumsum(0) - counts)[experts]  # [N]
        blocks = x.new_zeros(len(used), int(counts.max()), x.shape[1])  # [A, C, Din]
        blocks[block, slot] = x[rows]
        ys = self.experts(blocks, used)[block, slot]  # [N, H]
        weighted = gates[:, rows, experts].unsqueeze(-1) * ys  # [T, N, H]
        out = weighted.new_zeros(self.num_tasks, batch, self.out_dim).index_add(1, rows, weighted)
        if not self.training:
            return out, None
        probs = torch.softmax(logits, dim=-1).mean(1)  # [T, E]: P_e
        chosen = torch.zeros_like(probs).scatter_add(1, idx.reshape(self.num_tasks, -1), torch.ones_like(top).reshape(self.num_tasks, -1))
        fraction = chosen / (batch * self.k)  # [T, E]: f_e
        return out, self.balance * num_experts * (fraction * probs).sum(-1).mean()

    def selector_outputs(self) -> torch.Tensor:
        """``[T, k, E]`` the single-expert selectors r(z) over the E reachable experts."""
        s = smooth_step(self.z_logits, self.gamma).unsqueeze(2)  # [T, k, 1, bits]
        return torch.where(self.codes, s, 1 - s).prod(-1)

    def expert_weights(self, selectors: torch.Tensor | None = None) -> torch.Tensor:
        """``[T, E]`` DSelect-k's per-task expert weights (the same for every row), from ``selectors``
        (``[T, k, E]``, default ``selector_outputs()``)."""
        selectors = self.selector_outputs() if selectors is None else selectors
        return torch.einsum("tk,tke->te", torch.softmax(self.w_logits, dim=-1), selectors)

    def _dselect(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, Din] -> ([T, B, H], [] | None)``: run the experts with non-zero weight for some task."""
        selectors = self.selector_outputs()  # [T, k, E]
        weights = self.expert_weights(selectors)  # [T, E]
        active = (weights > 0).any(0).nonzero().squeeze(1)  # [A]
        out = torch.einsum("ta,abh->tbh", weights[:, active], self.experts(x, active))  # [T, B, H]
        if not self.training:
            return out, None
        terms = []
        if self.entropy_reg > 0:
            terms.append(-self.entropy_reg * (selectors * torch.log(selectors + _EPS)).sum())
        if self.num_experts & (self.num_experts - 1):  # not a power of 2: keep mass on reachable codes
            terms.append((1 / selectors.sum(-1)).sum())
        return out, torch.stack(terms).sum() if terms else None
