"""N experts of one architecture as one batched computation (MMoE, PLE, sparse MoE, soft-sharing columns).

E separate ``nn.Linear`` layers cost E small matrix products and E kernel launches per layer, which on
CPU at small batches is mostly fixed per-call overhead; stacking the experts' weights as ``[N, out, in]``
turns a layer into one product: a single GEMM when every expert reads the same input (the first layer of
MMoE's experts reads x), one batched GEMM (``baddbmm``) when each reads its own ``[N, B, in]`` slice (the
later layers, PLE's task experts, a sparse MoE's per-expert row blocks).

Notation: N experts, B rows, I/O a layer's input/output width, H the bank's output width.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from recsys_mtl.modules.mlp import ACTIVATIONS


class BatchedLinear(nn.Module):
    """N independent Linear layers ``[I] -> [O]``: ``weight: [N, O, I]``, ``bias: [N, O]``, each expert's
    slice initialised as ``nn.Linear``'s (kaiming-uniform ``a=sqrt(5)``, bias U(+-1/sqrt(I))).

    ``[B, I] -> [N, B, O]`` (one input for all experts) or ``[N, B, I] -> [N, B, O]`` (one per expert).
    ``experts`` (optional, ``[M]`` indices) runs only those experts: ``-> [M, B, O]``, their inputs
    ``[B, I]`` or ``[M, B, I]``; the others get an exact zero gradient (so every parameter always has
    one, as DistributedDataParallel's static graph requires).
    """

    def __init__(self, num: int, in_features: int, out_features: int):
        super().__init__()
        self.num, self.in_features, self.out_features = num, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(num, out_features))
        bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
        for n in range(num):
            nn.init.kaiming_uniform_(self.weight[n], a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, experts: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, I] | [M, B, I] -> [M, B, O]`` (M = N without ``experts``)."""
        weight, bias = (self.weight, self.bias) if experts is None else (self.weight[experts], self.bias[experts])
        m, o, i = weight.shape
        if x.dim() == 2:  # a shared input: one GEMM against the experts' weights side by side
            y = F.linear(x, weight.reshape(m * o, i), bias.reshape(m * o))  # [B, M * O]
            return y.view(x.shape[0], m, o).transpose(0, 1).contiguous()
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))  # [M, B, O]

    def per_expert(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """N functions ``[B, I] -> [B, O]``, expert n's layer each, over the weights unbound once: their
        gradients are stacked once for the layer, where indexing out each expert would scatter N full
        ``[N, O, I]`` gradients (work growing with N squared)."""
        return [partial(F.linear, weight=w, bias=b) for w, b in zip(self.weight.unbind(0), self.bias.unbind(0), strict=True)]

    def extra_repr(self) -> str:
        return f"num={self.num}, in_features={self.in_features}, out_features={self.out_features}"


class ExpertBank(nn.Module):
    """N MLPs ``Linear -> activation -> dropout`` per entry of ``dims`` (the layout of ``MLP``), batched.

    ``[B, I] | [N, B, I] -> [N, B, H]``; ``experts`` (``[M]`` indices) runs only those: ``-> [M, B, H]``.
    With empty ``dims`` each expert is the identity and ``H == I``.

    Two schedules of the same computation (the same parameters, the same result): all experts layer by
    layer in batched products (the default: few, large kernels), or, on the CPU once the bank's widest
    activation ``N * B * max(width)`` floats exceeds ``per_expert_bytes``, expert by expert through all its
    layers, so that each expert's activations are still in cache when its next layer and activation read
    them. Measured on the default model's bank (4 experts 258 -> 256 -> 128, forward and backward, 2 threads,
    AMD EPYC): batched 3.6 / 5.8 ms at batch 128 / 256 against 4.1 / 6.2 expert by expert; expert by expert
    11.4 / 22.4 / 42.7 ms at 512 / 1024 / 2048 against 12.1 / 23.0 / 46.2 batched (activations of 2 MB and
    more per layer no longer stay in cache).
    """

    per_expert_bytes = 3 * 2**19  # 1.5 MiB: between batch 256 (1 MiB) and 512 (2 MiB) on the default bank

    def __init__(self, in_dim: int, num: int, dims: Sequence[int], activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        widths = [in_dim, *dims]
        self.layers = nn.ModuleList(BatchedLinear(num, a, b) for a, b in itertools.pairwise(widths))
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.num, self.out_dim = num, widths[-1]
        self.widest = max(widths[1:], default=0)  # the widest activation's width, for the schedule choice
        self._register_load_state_dict_pre_hook(upgrade_hook, with_module=True)

    def forward(self, x: torch.Tensor, experts: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, I] | [M, B, I] -> [M, B, H]`` (M = N without ``experts``)."""
        if not self.layers:
            m = self.num if experts is None else len(experts)
            return x.expand(m, *x.shape) if x.dim() == 2 else x
        if experts is None and x.device.type == "cpu" and self.num * x.shape[-2] * self.widest * x.element_size() > self.per_expert_bytes:
            return self._expert_by_expert(x)
        for layer in self.layers:
            x = self.dropout(self.activation(layer(x, experts)))
        return x

    def _expert_by_expert(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, I] | [N, B, I] -> [N, B, H]``, each expert through all its layers before the next."""
        layers = [layer.per_expert() for layer in self.layers]
        inputs = [x] * self.num if x.dim() == 2 else x.unbind(0)
        outputs = []
        for n, h in enumerate(inputs):
            for layer in layers:
                h = self.dropout(self.activation(layer[n](h)))  # [B, O]
            outputs.append(h)
        return torch.stack(outputs)

    def last_linear(self) -> list[nn.Module]:
        """The last batched layer (``[]`` for identity experts)."""
        return list(self.layers[-1:])

    def weights(self) -> list[torch.Tensor]:
        """Each layer's ``[N, O, I]`` weight, in layer order."""
        return [layer.weight for layer in self.layers]


    def upgrade_state_dict(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Rewrite, in place, this bank's state saved per expert by an earlier version (expert n's l-th
        Linear at position p of its nn.Sequential as ``<prefix><n>.<p>.weight``, PLE's task experts as
        ``<prefix><t>.<e>.<p>.weight``) in the stacked layout. Experts are ordered by their index path
        (PLE's task t, expert e becomes ``t * Et + e``), layers by position."""
        if f"{prefix}layers.0.weight" in state:
            return
        found: dict[tuple[int, ...], dict[int, dict[str, torch.Tensor]]] = {}
        for key in [k for k in state if k.startswith(prefix)]:
            match = _PER_EXPERT.fullmatch(key[len(prefix):])
            if match:
                path = tuple(int(p) for p in match["path"].split("."))
                found.setdefault(path, {}).setdefault(int(match["pos"]), {})[match["kind"]] = state.pop(key)
        experts = [found[path] for path in sorted(found)]
        for layer, pos in enumerate(sorted(experts[0]) if experts else []):
            for kind in ("weight", "bias"):
                state[f"{prefix}layers.{layer}.{kind}"] = torch.stack([e[pos][kind] for e in experts])


_PER_EXPERT = re.compile(r"(?P<path>\d+(?:\.\d+)?)\.(?P<pos>\d+)\.(?P<kind>weight|bias)$")


def upgrade_hook(module: nn.Module, state: dict, prefix: str, *args) -> None:
    """Load-state-dict pre-hook of a module whose layout changed: ``module.upgrade_state_dict``, so that
    models saved by earlier versions still load."""
    module.upgrade_state_dict(state, prefix)


def upgrade_legacy_state(model: nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """A copy of ``state`` (``prefix`` + ``model``'s module names) with every part saved in an earlier
    layout rewritten in the current one (for warm start, which merges states without ``load_state_dict``)."""
    out = dict(state)
    for name, module in model.named_modules():
        upgrade = getattr(module, "upgrade_state_dict", None)
        if upgrade is not None:
            upgrade(out, f"{prefix}{name}." if name else prefix)
    return out
