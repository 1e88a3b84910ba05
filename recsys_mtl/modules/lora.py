"""Low-rank adapters (LoRA) for the dense layers of the multi-task backbones.

* ``LoRALinear``: LoRA (Hu et al., ICLR 2022; reference code microsoft/LoRA ``loralib/layers.py``):
  ``y = base(x) + (alpha/r) * (dropout(x) @ A^T) @ B^T`` with the base Linear frozen, ``A: [r, in]``
  kaiming-uniform (``a=sqrt(5)``, as nn.Linear), ``B: [out, r]`` zeros, so an untrained adapter is exact.
* ``MTLoRALinear``: MTLoRA (Agiza, Neseem, Reda, CVPR 2024; scale-lab/MTLoRA ``models/lora.py``, its
  "matrixv2" mode): a task-agnostic path shared by all tasks plus one task-specific path per task,
  ``y_t = base(x) + s * B A x + s_t * B_t A_t x``.
* ``MoLoRALinear``: MOELoRA (Liu et al., SIGIR 2024; liuqidong07/MOELoRA-peft ``mmoelora.py``): E LoRA
  experts of rank ``r/E`` mixed by a task-level gate, ``y_t = base(x) + (alpha/r) sum_e g[t, e] B_e A_e x``,
  ``g[t] = softmax(logits[t])`` (the reference computes the logits from a task embedding through a bias-free
  Linear; free ``[T, E]`` logits span the same set of gates). No per-example routing, so it stays mergeable.

The task-conditioned layers (``TaskLoRALinear``) take either ``x: [T, B, in] -> [T, B, out]`` (task t's
path on slice t) or, while a task is active (``task_context``), ``x: [..., in]`` with that task's path. A
task path inside a *shared* layer (e.g. an MMoE expert) makes that layer's output task-dependent, so such a
backbone is run once per task: ``per_task_forward`` (T forwards; task t reads row t of its own run).
``merge_adapters`` folds the adapters back into plain ``nn.Linear`` s (per task for the task-conditioned
ones), restoring the un-adapted state-dict keys and shapes for serving.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

Targets = Callable[[str, nn.Linear], bool]  # (qualified name, layer) -> adapt it?


def _check(rank: int, alpha: float, name: str = "rank") -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{name} must be a positive integer, got {rank!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")


def _low_rank(num: int | None, rank: int, features: int, like: torch.Tensor) -> nn.Parameter:
    """``[rank, features]`` (or ``[num, rank, features]``) initialised as loralib's ``lora_A``."""
    shape = (rank, features) if num is None else (num, rank, features)
    a = like.new_empty(shape)
    for m in a.reshape(-1, rank, features):
        nn.init.kaiming_uniform_(m, a=math.sqrt(5))
    return nn.Parameter(a)


class LoRALinear(nn.Module):
    """LoRA around a frozen ``base: nn.Linear``. ``[..., in] -> [..., out]``.

    ``A: [r, in]``, ``B: [out, r]`` (zeros), ``scale = alpha / r``; dropout acts on the adapter's input only.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        _check(rank, alpha)
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha, self.scale = rank, float(alpha), alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.A = _low_rank(None, rank, base.in_features, base.weight)
        self.B = nn.Parameter(base.weight.new_zeros(base.out_features, rank))

    def delta_weight(self, task: int | None = None) -> torch.Tensor:
        """``[out, in]`` the low-rank update ``scale * B @ A`` (``task`` is ignored)."""
        return self.scale * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., in] -> [..., out]``"""
        return self.base(x) + self.scale * ((self.dropout(x) @ self.A.T) @ self.B.T)

    def merge(self, task: int | None = None) -> nn.Linear:
        """A plain ``nn.Linear`` with ``W + delta_weight(task)`` and the base bias (a new module)."""
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                           device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            merged.weight.copy_(self.base.weight + self.delta_weight(task))
            if self.base.bias is not None:
                merged.bias.copy_(self.base.bias)
        return merged


class TaskLoRALinear(LoRALinear):
    """Base of the task-conditioned adapters (``MTLoRALinear``: ``A``/``B`` are the shared path and
    ``task_delta`` adds task t's; ``MoLoRALinear`` reuses ``A``/``B`` as its expert stacks).

    ``active_task`` (set by ``task_context``) selects the task for inputs ``[..., in]``; without one the input
    must be ``[T, B, in]`` and slice t gets task t's path.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, num_tasks: int, dropout: float = 0.0):
        super().__init__(base, rank, alpha, dropout)
        _check(num_tasks, 1.0, "num_tasks")
        self.num_tasks = num_tasks
        self.active_task: int | None = None

    def task_delta(self, h: torch.Tensor, task: int | None) -> torch.Tensor:
        """``h = dropout(x)``: ``[..., in] -> [..., out]`` for one task, or ``[T, B, in] -> [T, B, out]``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, in] -> [T, B, out]``; with an active task ``[..., in] -> [..., out]``."""
        task = self.active_task
        if task is None and (x.dim() != 3 or x.shape[0] != self.num_tasks):
            raise ValueError(f"{type(self).__name__} needs x: [T={self.num_tasks}, B, in] or an active task "
                             f"(task_context), got x of shape {tuple(x.shape)}")
        h = self.dropout(x)  # one dropout mask for the shared and the task path
        return self.base(x) + self.scale * ((h @ self.A.T) @ self.B.T) + self.task_delta(h, task)


class MTLoRALinear(TaskLoRALinear):
    """MTLoRA: shared path ``scale * B A`` plus task path ``task_scale * B_t A_t`` (``alpha / task_rank``).

    ``task_A: [T, r_t, in]`` (kaiming), ``task_B: [T, out, r_t]`` (zeros); ``task_rank`` defaults to ``rank``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, num_tasks: int, task_rank: int | None = None,
                 dropout: float = 0.0):
        super().__init__(base, rank, alpha, num_tasks, dropout)
        task_rank = rank if task_rank is None else task_rank
        _check(task_rank, alpha, "task_rank")
        self.task_scale = alpha / task_rank
        self.task_A = _low_rank(num_tasks, task_rank, base.in_features, base.weight)
        self.task_B = nn.Parameter(base.weight.new_zeros(num_tasks, base.out_features, task_rank))

    def task_delta(self, h: torch.Tensor, task: int | None) -> torch.Tensor:
        if task is not None:
            return self.task_scale * ((h @ self.task_A[task].T) @ self.task_B[task].T)
        low = torch.einsum("tbi,tri->tbr", h, self.task_A)
        return self.task_scale * torch.einsum("tbr,tor->tbo", low, self.task_B)

    def delta_weight(self, task: int | None = None) -> torch.Tensor:
        """``[out, in]`` the shared update, plus task ``task``'s own when given."""
        shared = super().delta_weight()
        return shared if task is None else shared + self.task_scale * (self.task_B[task] @ self.task_A[task])


class MoLoRALinear(TaskLoRALinear):
    """MOELoRA: E experts ``A_e: [r/E, in]``, ``B_e: [out, r/E]`` (stored ``A: [E, r/E, in]``,
    ``B: [E, out, r/E]``) mixed per task by ``g = softmax(gate_logits[t])`` (``gate_logits: [T, E]``, zeros
    = uniform). ``scale = alpha / r`` with r the total rank, as the reference. No separate shared path.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, num_tasks: int, num_experts: int,
                 dropout: float = 0.0):
        _check(num_experts, 1.0, "num_experts")
        if rank % num_experts:
            raise ValueError(f"rank={rank} must be divisible by num_experts={num_experts}")
        super().__init__(base, rank, alpha, num_tasks, dropout)
        r = rank // num_experts
        self.num_experts = num_experts
        self.A = _low_rank(num_experts, r, base.in_features, base.weight)
        self.B = nn.Parameter(base.weight.new_zeros(num_experts, base.out_features, r))
        self.gate_logits = nn.Parameter(base.weight.new_zeros(num_tasks, num_experts))

    def gates(self) -> torch.Tensor:
        """``[T, E]`` each task's softmax mixture over the experts."""
        return torch.softmax(self.gate_logits, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, in] -> [T, B, out]``; with an active task ``[..., in] -> [..., out]``."""
        task = self.active_task
        if task is None and (x.dim() != 3 or x.shape[0] != self.num_tasks):
            raise ValueError(f"{type(self).__name__} needs x: [T={self.num_tasks}, B, in] or an active task "
                             f"(task_context), got x of shape {tuple(x.shape)}")
        low = torch.einsum("...i,eri->...er", self.dropout(x), self.A)  # [..., E, r/E]
        up = torch.einsum("...er,eor->...eo", low, self.B)  # [..., E, out]
        g = self.gates()
        if task is not None:
            mixed = torch.einsum("...eo,e->...o", up, g[task])
        else:
            mixed = torch.einsum("tbeo,te->tbo", up, g)
        return self.base(x) + self.scale * mixed

    def delta_weight(self, task: int | None = None) -> torch.Tensor:
        """``[out, in]`` task ``task``'s update ``scale * sum_e g[t, e] B_e A_e`` (a task is required)."""
        if task is None:
            raise ValueError("MoLoRALinear.delta_weight/merge needs a task: the gate is per task")
        return self.scale * torch.einsum("e,eor,eri->oi", self.gates()[task], self.B, self.A)


@contextmanager
def task_context(module: nn.Module, task: int) -> Iterator[None]:
    """Within the block every ``TaskLoRALinear`` in ``module`` applies task ``task``'s path."""
    layers = [m for m in module.modules() if isinstance(m, TaskLoRALinear)]
    for m in layers:
        m.active_task = task
    try:
        yield
    finally:
        for m in layers:
            m.active_task = None


def per_task_forward(backbone: nn.Module, x: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """``[B, Din] -> [T, B, H]``: task t's row of a backbone run with task t active (T forwards)."""
    outs = []
    for t in range(num_tasks):
        with task_context(backbone, t):
            outs.append(backbone(x)[t])
    return torch.stack(outs)


def add_adapters(module: nn.Module, rank: int, alpha: float, targets: Targets | None = None, dropout: float = 0.0,
                 kind: Literal["lora", "mtlora", "moelora"] = "lora", num_tasks: int | None = None,
                 task_rank: int | None = None, num_experts: int | None = None) -> list[str]:
    """Replace, in place, the ``nn.Linear`` submodules of ``module`` chosen by ``targets`` (all by default)
    with adapters of ``kind``; returns their qualified names. Only the replaced layers' base parameters are
    frozen; train ``adapter_parameters(module)``. "mtlora"/"moelora" need ``num_tasks`` ("moelora" also
    ``num_experts``)."""
    _check(rank, alpha)
    if kind not in ("lora", "mtlora", "moelora"):
        raise ValueError(f"unknown kind {kind!r}; expected 'lora', 'mtlora' or 'moelora'")
    if kind != "lora" and num_tasks is None:
        raise ValueError(f"kind={kind!r} needs num_tasks")
    if kind == "moelora" and num_experts is None:
        raise ValueError("kind='moelora' needs num_experts")
    inside = {f"{n}.base" if n else "base" for n, m in module.named_modules() if isinstance(m, LoRALinear)}
    chosen = [(n, m) for n, m in module.named_modules() if type(m) is nn.Linear and n and n not in inside
              and (targets is None or targets(n, m))]
    for name, linear in chosen:
        if kind == "lora":
            new: LoRALinear = LoRALinear(linear, rank, alpha, dropout)
        elif kind == "mtlora":
            assert num_tasks is not None
            new = MTLoRALinear(linear, rank, alpha, num_tasks, task_rank, dropout)
        else:
            assert num_tasks is not None and num_experts is not None
            new = MoLoRALinear(linear, rank, alpha, num_tasks, num_experts, dropout)
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, new)
    return [n for n, _ in chosen]


def merge_adapters(module: nn.Module, task: int | None = None) -> list[str]:
    """Replace, in place, every adapter in ``module`` by its merged ``nn.Linear`` (task ``task``'s weights for
    the task-conditioned ones; merge a copy per task to serve all tasks); returns the merged names."""
    if isinstance(module, LoRALinear):
        raise ValueError("merge_adapters needs a module that contains the adapters; use LoRALinear.merge()")
    names = [n for n, m in module.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        layer = module.get_submodule(name)
        if isinstance(layer, TaskLoRALinear) and task is None:
            raise ValueError(f"merging {name} ({type(layer).__name__}) needs a task")
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, layer.merge(task))
    return names


def adapter_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapters' trainable parameters (A, B, task paths, gates), without any base weight."""
    return [p for m in module.modules() if isinstance(m, LoRALinear)
            for n, p in m.named_parameters(recurse=False) if p.requires_grad]
