"""Low-rank adapters (LoRA) for the dense layers of the multi-task model: ``nn.Linear`` (dense MLP, shared
bottom, gates, towers, cross-stitch columns) and ``BatchedLinear`` (the experts of every ``ExpertBank``).

* ``LoRA`` (Hu et al., ICLR 2022; reference code microsoft/LoRA ``loralib/layers.py``):
  ``y = base(x) + (alpha/r) * (dropout(x) @ A^T) @ B^T``, ``A`` kaiming-uniform (``a=sqrt(5)``, as
  nn.Linear), ``B`` zeros, so an untrained adapter leaves the layer's output bit-identical.
* ``MTLoRA`` (Agiza, Neseem, Reda, CVPR 2024; scale-lab/MTLoRA ``models/lora.py``, its "matrixv2" mode): a
  path shared by the adapted tasks plus one path per task, ``y_t = base(x) + s B A x + s_t B_t A_t x``.
* ``MoLoRA`` (MOELoRA, Liu et al., SIGIR 2024; liuqidong07/MOELoRA-peft ``mmoelora.py``): E LoRA experts of
  rank ``r/E`` mixed by a task-level gate, ``y_t = base(x) + (alpha/r) sum_e g[t, e] B_e A_e x``,
  ``g[t] = softmax(gate_logits[t])`` (free ``[T, E]`` logits span the reference's task-embedding gates).
  No per-example routing, so it stays mergeable per task.
* ``DomainLoRA`` (MLoRA, Yang et al., RecSys 2024; gaohaining/MLoRA ``Mlora`` layer): row b of domain d
  gets ``y_b = base(x_b) + (alpha/r) B_d A_d x_b + c_d`` (``c_d`` MLoRA's per-domain bias, zeros), plus,
  optionally, a LoRA path every domain reads. Each row's domain comes from a ``[B, D]`` one-hot set by
  ``domain_rows``; every domain's rank-r product is computed for every row and masked, which is one
  rank ``D*r`` product per layer (exact: a row's other domains contribute exact zeros). Per row, so not
  mergeable.

The adapted layer keeps its base parameters under their own names (``weight``, ``bias``) and holds the
adapter as ``adapter``: a checkpoint of the plain model loads into it by name, and merging (``merge_adapters``)
gives back exactly the plain layer's keys and shapes. For a ``BatchedLinear`` of N experts every adapter
tensor gets a leading expert dimension (``A: [N, r, I]``, ``B: [N, O, r]``), applied by batched matmul.

Adapters are switched by ``adapter_state(module, enabled, task)``: disabled, a layer is exactly its base;
the task-conditioned kinds need the task whose path to apply (an index among the adapted tasks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from recsys_mtl.modules.experts import BatchedLinear

Kind = Literal["lora", "mtlora", "moelora"]
DomainRows = torch.Tensor  # [B, D] 0/1: row b's domain (all zeros: no domain path)
Targets = Callable[[str, nn.Module], bool]  # (qualified name, layer) -> adapt it?


def _check(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _low_rank(shape: tuple[int, ...], like: torch.Tensor) -> nn.Parameter:
    """``[..., r, I]`` initialised as loralib's ``lora_A`` (each ``[r, I]`` matrix kaiming-uniform)."""
    a = like.new_empty(shape)
    for m in a.reshape(-1, *shape[-2:]):
        nn.init.kaiming_uniform_(m, a=math.sqrt(5))
    return nn.Parameter(a)


def _apply(h: torch.Tensor, a: torch.Tensor, b: torch.Tensor, experts: torch.Tensor | None) -> torch.Tensor:
    """``(h @ A^T) @ B^T`` with ``A: [r, I]`` / ``B: [O, r]`` (``h: [..., I] -> [..., O]``) or per expert
    ``A: [N, r, I]`` / ``B: [N, O, r]`` (``h: [B, I] | [M, B, I] -> [M, B, O]``, ``experts`` selecting M)."""
    if experts is not None:
        a, b = a[experts], b[experts]
    return (h @ a.mT) @ b.mT


class LoRA(nn.Module):
    """The low-rank update of one layer with weight ``[*lead, O, I]`` (``lead``: ``()`` or ``(N,)``).

    ``A: [*lead, r, I]``, ``B: [*lead, O, r]`` (zeros), ``scale = alpha / r``; dropout acts on the
    adapter's input only. ``enabled`` / ``task`` are set by ``adapter_state``.
    """

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        _check(rank, "rank")
        if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
        *lead, out_features, in_features = weight.shape
        self.lead, self.rank, self.alpha, self.scale = tuple(lead), rank, float(alpha), alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.enabled, self.task = True, None
        self.A = _low_rank((*lead, rank, in_features), weight)
        self.B = nn.Parameter(weight.new_zeros(*lead, out_features, rank))

    def add(self, y: torch.Tensor, x: torch.Tensor, experts: torch.Tensor | None = None) -> torch.Tensor:
        """``y`` (the base output for input ``x``) plus the update; ``y`` itself when disabled."""
        if not self.enabled:
            return y
        return y + self.delta(self.dropout(x), experts).to(y.dtype)

    def delta(self, h: torch.Tensor, experts: torch.Tensor | None) -> torch.Tensor:
        """The update for the (dropped-out) input ``h``, shaped as the base output."""
        return self.scale * _apply(h, self.A, self.B, experts)

    def delta_weight(self, task: int | None = None) -> torch.Tensor:
        """``[*lead, O, I]`` the update of the base weight (``task`` only for the task-conditioned kinds)."""
        return self.scale * (self.B @ self.A)


class TaskAdapter(LoRA):
    """Base of the task-conditioned kinds: their update depends on ``task`` (set by ``adapter_state``)."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float, num_tasks: int, dropout: float = 0.0):
        super().__init__(weight, rank, alpha, dropout)
        _check(num_tasks, "num_tasks")
        self.num_tasks = num_tasks

    def active(self, task: int | None = None) -> int:
        task = self.task if task is None else task
        if task is None or not 0 <= task < self.num_tasks:
            raise ValueError(f"{type(self).__name__} applies one task's path: pass a task in 0..{self.num_tasks - 1} "
                             f"(adapter_state(..., task=t) or merge(task=t)), got {task!r}")
        return task


class MTLoRA(TaskAdapter):
    """MTLoRA: the shared path ``scale * B A`` plus task t's ``task_scale * B_t A_t`` (``alpha / task_rank``).
    ``task_A: [T, *lead, r_t, I]`` (kaiming), ``task_B: [T, *lead, O, r_t]`` (zeros)."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float, num_tasks: int, task_rank: int | None = None,
                 dropout: float = 0.0):
        super().__init__(weight, rank, alpha, num_tasks, dropout)
        task_rank = rank if task_rank is None else task_rank
        _check(task_rank, "task_rank")
        self.task_scale = alpha / task_rank
        *lead, out_features, in_features = weight.shape
        self.task_A = _low_rank((num_tasks, *lead, task_rank, in_features), weight)
        self.task_B = nn.Parameter(weight.new_zeros(num_tasks, *lead, out_features, task_rank))

    def delta(self, h: torch.Tensor, experts: torch.Tensor | None) -> torch.Tensor:
        t = self.active()
        return super().delta(h, experts) + self.task_scale * _apply(h, self.task_A[t], self.task_B[t], experts)

    def delta_weight(self, task: int | None = None) -> torch.Tensor:
        t = self.active(task)
        return super().delta_weight() + self.task_scale * (self.task_B[t] @ self.task_A[t])


class MoLoRA(TaskAdapter):
    """MOELoRA: E experts stored ``A: [E, *lead, r/E, I]``, ``B: [E, *lead, O, r/E]`` mixed per task by
    ``g = softmax(gate_logits[t])`` (``gate_logits: [T, E]``, zeros = uniform); ``scale = alpha / r``
    with r the total rank, as the reference. No separate shared path."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float, num_tasks: int, num_experts: int,
                 dropout: float = 0.0):
        _check(num_experts, "num_experts")
        if rank % num_experts:
            raise ValueError(f"rank={rank} must be divisible by num_experts={num_experts}")
        super().__init__(weight, rank, alpha, num_tasks, dropout)
        *lead, out_features, in_features = weight.shape
        self.num_experts, r = num_experts, rank // num_experts
        self.A = _low_rank((num_experts, *lead, r, in_features), weight)
        self.B = nn.Parameter(weight.new_zeros(num_experts, *lead, out_features, r))
        self.gate_logits = nn.Parameter(weight.new_zeros(num_tasks, num_experts))

    def gates(self) -> torch.Tensor:
        """``[T, E]`` each task's softmax mixture over the experts."""
        return torch.softmax(self.gate_logits, dim=-1)

    def delta(self, h: torch.Tensor, experts: torch.Tensor | None) -> torch.Tensor:
        g = self.gates()[self.active()]  # [E]
        return self.scale * sum(g[e] * _apply(h, self.A[e], self.B[e], experts) for e in range(self.num_experts))

    def delta_weight(self, task: int | None = None) -> torch.Tensor:
        g = self.gates()[self.active(task)]
        return self.scale * sum(g[e] * (self.B[e] @ self.A[e]) for e in range(self.num_experts))


class DomainLoRA(LoRA):
    """MLoRA: per-domain ``A: [D, *lead, r, I]`` (kaiming), ``B: [D, *lead, O, r]`` and ``domain_bias:
    [D, *lead, O]`` (zeros); with ``shared``, also a LoRA path of the same rank read by every row
    (``shared_A`` / ``shared_B``). ``rows`` (``[B, D]``, set by ``domain_rows``) picks each row's domain."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float, num_domains: int, shared: bool = False,
                 dropout: float = 0.0):
        _check(num_domains, "num_domains")
        super().__init__(weight, rank, alpha, dropout)
        *lead, out_features, in_features = weight.shape
        self.num_domains, self.shared, self.rows = num_domains, shared, None
        if shared:
            self.shared_A, self.shared_B = self.A, self.B
        self.A = _low_rank((num_domains, *lead, rank, in_features), weight)
        self.B = nn.Parameter(weight.new_zeros(num_domains, *lead, out_features, rank))
        self.domain_bias = nn.Parameter(weight.new_zeros(num_domains, *lead, out_features))

    def delta(self, h: torch.Tensor, experts: torch.Tensor | None) -> torch.Tensor:
        if self.rows is None:
            raise ValueError("DomainLoRA applies each row's domain path: run it within domain_rows(module, rows)")
        a = self.A.movedim(0, -3).flatten(-3, -2)  # [*lead, D*r, I], domain-major
        b = self.B.movedim(0, -2).flatten(-2)  # [*lead, O, D*r]
        bias = self.domain_bias.movedim(0, -2)  # [*lead, D, O]
        if experts is not None:
            a, b, bias = a[experts], b[experts], bias[experts]
        rows = self.rows.to(h.dtype)  # [B, D]
        z = (h @ a.mT).unflatten(-1, (self.num_domains, self.rank)) * rows[:, :, None]  # [..., B, D, r]
        out = self.scale * (z.flatten(-2) @ b.mT) + rows @ bias.to(h.dtype)  # [..., B, O]
        if self.shared:
            out = out + self.scale * _apply(h, self.shared_A, self.shared_B, experts)
        return out

    def delta_weight(self, task: int | None = None) -> torch.Tensor:
        raise ValueError("per-domain adapters depend on each row's domain: they cannot be folded into the base weight")


class AdaptedLinear(nn.Linear):
    """An ``nn.Linear`` (the same ``weight`` / ``bias`` parameters, by name) plus ``adapter``. ``[..., I] -> [..., O]``."""

    def __init__(self, base: nn.Linear, adapter: LoRA):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., I] -> [..., O]``"""
        return self.adapter.add(F.linear(x, self.weight, self.bias), x)


class AdaptedBatchedLinear(BatchedLinear):
    """A ``BatchedLinear`` (the same ``weight`` / ``bias``, by name) plus ``adapter`` with per-expert tensors."""

    def __init__(self, base: BatchedLinear, adapter: LoRA):
        nn.Module.__init__(self)
        self.num, self.in_features, self.out_features = base.num, base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.adapter = adapter

    def forward(self, x: torch.Tensor, experts: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, I] | [M, B, I] -> [M, B, O]``"""
        return self.adapter.add(super().forward(x, experts), x, experts)

    def per_expert(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """``BatchedLinear.per_expert`` with each expert's adapter added (the adapter's small tensors indexed)."""
        index = torch.arange(self.num, device=self.weight.device).unsqueeze(1)  # [N, 1]: expert n's as a subset
        return [partial(self._one, base, index[n]) for n, base in enumerate(super().per_expert())]

    def _one(self, base: Callable[[torch.Tensor], torch.Tensor], expert: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``[B, I] -> [B, O]``: one expert's base layer plus its adapter."""
        return self.adapter.add(base(x).unsqueeze(0), x, expert)[0]


Adapted = AdaptedLinear | AdaptedBatchedLinear


def add_adapters(module: nn.Module, rank: int, alpha: float, targets: Targets | None = None, dropout: float = 0.0,
                 kind: Kind = "lora", num_tasks: int | None = None, task_rank: int | None = None,
                 num_experts: int | None = None, num_domains: int | None = None, domain_shared: bool = False) -> list[str]:
    """Replace, in place, the plain ``nn.Linear`` / ``BatchedLinear`` submodules of ``module`` chosen by
    ``targets`` (all by default) with adapted ones of ``kind``; returns their qualified names. Only the
    replaced layers' base parameters are frozen. "mtlora"/"moelora" need ``num_tasks`` ("moelora" also
    ``num_experts``); "lora" with ``num_domains`` gives per-domain adapters (``DomainLoRA``)."""
    if kind not in ("lora", "mtlora", "moelora"):
        raise ValueError(f"unknown kind {kind!r}; expected 'lora', 'mtlora' or 'moelora'")
    if kind != "lora" and num_tasks is None:
        raise ValueError(f"kind={kind!r} needs num_tasks")
    if kind == "moelora" and num_experts is None:
        raise ValueError("kind='moelora' needs num_experts")
    if kind != "lora" and num_domains is not None:
        raise ValueError(f"per-domain adapters (num_domains) are of kind 'lora', got {kind!r}")
    chosen = [(n, m) for n, m in module.named_modules()
              if type(m) in (nn.Linear, BatchedLinear) and n and (targets is None or targets(n, m))]
    for name, layer in chosen:
        layer.weight.requires_grad_(False)
        if layer.bias is not None:
            layer.bias.requires_grad_(False)
        if num_domains is not None:
            adapter: LoRA = DomainLoRA(layer.weight, rank, alpha, num_domains, domain_shared, dropout)
        elif kind == "lora":
            adapter = LoRA(layer.weight, rank, alpha, dropout)
        elif kind == "mtlora":
            adapter = MTLoRA(layer.weight, rank, alpha, num_tasks, task_rank, dropout)
        else:
            adapter = MoLoRA(layer.weight, rank, alpha, num_tasks, num_experts, dropout)
        wrapped = AdaptedLinear(layer, adapter) if type(layer) is nn.Linear else AdaptedBatchedLinear(layer, adapter)
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, wrapped)
    return [n for n, _ in chosen]


def merge_adapters(module: nn.Module, task: int | None = None) -> list[str]:
    """Replace, in place, every adapted layer in ``module`` by its plain layer with ``weight + delta_weight``
    (task ``task``'s for the task-conditioned kinds); returns the merged names."""
    names = [n for n, m in module.named_modules() if isinstance(m, Adapted)]
    if isinstance(module, Adapted):
        raise ValueError("merge_adapters needs a module that contains the adapted layers")
    for name in names:
        layer = module.get_submodule(name)
        if isinstance(layer, AdaptedLinear):
            plain: nn.Module = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                                         device=layer.weight.device, dtype=layer.weight.dtype)
        else:
            plain = BatchedLinear(layer.num, layer.in_features, layer.out_features).to(layer.weight)
        with torch.no_grad():
            plain.weight.copy_(layer.weight + layer.adapter.delta_weight(task))
            if layer.bias is not None:
                plain.bias.copy_(layer.bias)
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, plain)
    return names


def adapter_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters (A, B, task and domain paths, gates), without any base weight."""
    return [p for m in module.modules() if isinstance(m, LoRA) for p in m.parameters(recurse=False)]


@contextmanager
def adapter_state(module: nn.Module, enabled: bool = True, task: int | None = None) -> Iterator[None]:
    """Within the block every adapter in ``module`` is on (``enabled``) or off (the layers are exactly their
    base), applying task ``task``'s path (task-conditioned kinds); the previous state is restored after."""
    adapters = [m for m in module.modules() if isinstance(m, LoRA)]
    before = [(m.enabled, m.task) for m in adapters]
    for m in adapters:
        m.enabled, m.task = enabled, task
    try:
        yield
    finally:
        for m, (was_enabled, was_task) in zip(adapters, before, strict=True):
            m.enabled, m.task = was_enabled, was_task


@contextmanager
def domain_rows(module: nn.Module, rows: DomainRows) -> Iterator[None]:
    """Within the block every per-domain adapter in ``module`` applies to row b the path of its domain
    (``rows: [B, D]``); they are unset after."""
    adapters = [m for m in module.modules() if isinstance(m, DomainLoRA)]
    for m in adapters:
        m.rows = rows
    try:
        yield
    finally:
        for m in adapters:
            m.rows = None
