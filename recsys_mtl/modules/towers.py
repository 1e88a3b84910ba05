"""Task towers: one small MLP and a scalar head per model output."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recsys_mtl.modules.mlp import MLP


class Tower(nn.Module):
    """``[B, H] -> [B]`` logit (or raw regression output)."""

    def __init__(self, in_dim: int, dims: Sequence[int], activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        self.mlp = MLP(in_dim, dims, activation, dropout)
        self.head = nn.Linear(self.mlp.out_dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, H] -> [B]``"""
        return self.head(self.mlp(h)).squeeze(-1)
