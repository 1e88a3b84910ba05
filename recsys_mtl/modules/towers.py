"""Task towers: one small MLP and a scalar head per model output, optionally gated (PEPNet's PPNet)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recsys_mtl.modules.gating import GateNU
from recsys_mtl.modules.mlp import MLP


class Tower(nn.Module):
    """``[B, H] -> [B]`` logit (or raw regression output), in two steps: ``hidden`` (the MLP, ``[B, H]
    -> [B, Ht]``) and ``head`` (``[B, Ht] -> [B]``), so that a transfer between towers (AITM) can sit
    between them.

    ``condition_dim`` > 0 gates every hidden layer's units (PEPNet's PPNet, Chang et al., KDD 2023):
    layer l's output is multiplied by ``GateNU([condition, stop_grad(h)])`` with ``condition`` ``[B, C]``
    the task's conditioning vector (its task embedding and the domain features' embeddings). The gates
    start at their neutral value 1, so a gated tower starts as the plain one.
    """

    def __init__(
        self, in_dim: int, dims: Sequence[int], activation: str = "relu", dropout: float = 0.0,
        condition_dim: int = 0, gate_hidden: int = 64, gamma: float = 2.0,
    ):
        super().__init__()
        self.mlp = MLP(in_dim, dims, activation, dropout)
        self.head = nn.Linear(self.mlp.out_dim, 1)
        self.gates = nn.ModuleList(GateNU(condition_dim + in_dim, dim, gate_hidden, gamma) for dim in dims) if condition_dim else None
        self.out_dim = self.mlp.out_dim

    def hidden(self, h: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``([B, H], [B, C] or None) -> [B, Ht]``"""
        if self.gates is None:
            return self.mlp(h)
        # the gates read the tower input without steering it (PEPNet's stop-gradient)
        gate_input = torch.cat([condition, h.detach()], dim=1)  # [B, C + H]
        x, layer = h, 0
        for module in self.mlp:
            x = module(x)
            if isinstance(module, MLP.ACTIVATION_TYPES):  # after each hidden layer's activation
                x = x * self.gates[layer](gate_input)
                layer += 1
        return x

    def forward(self, h: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``([B, H], [B, C] or None) -> [B]``"""
        return self.head(self.hidden(h, condition)).squeeze(-1)
