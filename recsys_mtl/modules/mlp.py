"""A plain MLP with a choice of activation and dropout (torchrec's MLP has no dropout)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class MLP(nn.Sequential):
    """Linear -> activation -> dropout, per entry of ``dims``. ``[B, in_dim] -> [B, out_dim]``.

    With empty ``dims`` it is the identity and ``out_dim == in_dim``.
    """

    ACTIVATION_TYPES = tuple(ACTIVATIONS.values())  # a hidden layer ends at its activation

    def __init__(self, in_dim: int, dims: Sequence[int], activation: str = "relu", dropout: float = 0.0):
        layers: list[nn.Module] = []
        width = in_dim
        for dim in dims:
            layers += [nn.Linear(width, dim), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = dim
        super().__init__(*layers)
        self.out_dim = width

    def last_linear(self) -> list[nn.Linear]:
        """The last Linear layer (``[]`` for the identity MLP)."""
        linears = [m for m in self if isinstance(m, nn.Linear)]
        return linears[-1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim] -> [B, out_dim]``"""
        return super().forward(x)
