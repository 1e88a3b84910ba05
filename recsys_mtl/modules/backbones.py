"""Multi-task backbones: the shared part between the embeddings and the task towers (SPEC §1).

Each maps ``x: [B, Din]`` to one representation per task, stacked as ``[T, B, H]``, and exposes
``out_dim`` (H) and ``last_shared_layer()``: the last layers whose output every task reads (where
GradNorm measures the tasks' gradient norms), ``[]`` when no layer is shared. Tasks are indexed
0..T-1 in the order the model's towers are listed. ``regulariser()`` is the backbone's own loss term
(a penalty on its parameters, or a routing loss of its last forward call), added to the step's one
backward pass by the train module; None when it has none.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from recsys_mtl.modules.experts import ExpertBank, upgrade_hook
from recsys_mtl.modules.mlp import MLP
from recsys_mtl.modules.task_layout import TaskLayout, bank, linear, per_task

ExpertFactory = Callable[[int, int], ExpertBank]  # (in_dim, number of experts) -> their batched bank


class Backbone(nn.Module):
    """The interface every backbone implements (see the module docstring)."""

    out_dim: int

    def last_shared_layer(self) -> list[nn.Module]:
        raise NotImplementedError

    def regulariser(self) -> torch.Tensor | None:
        """``[]`` the backbone's own loss term, attached to the graph; None without one."""
        return None

    def task_layout(self) -> TaskLayout:
        """Its per-task parameters (``modules.task_layout``); none by default."""
        return TaskLayout()


class SharedBottom(Backbone):
    """Hard parameter sharing: one MLP whose output every task uses."""

    def __init__(self, bottom: MLP, num_tasks: int):
        super().__init__()
        self.bottom = bottom
        self.num_tasks = num_tasks
        self.out_dim = bottom.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Din] -> [T, B, H]``"""
        h = self.bottom(x)
        return h.unsqueeze(0).expand(self.num_tasks, -1, -1)

    def last_shared_layer(self) -> list[nn.Module]:
        return list(self.bottom.last_linear())


class MMoE(Backbone):
    """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018): E shared experts, one softmax gate per task.

    With ``num_gates=1`` it is the one-gate MoE baseline of the paper (every task reads the same mix).
    The experts run as one batched bank; the gates as one Linear with G * E outputs.
    """

    def __init__(self, in_dim: int, make_experts: ExpertFactory, num_experts: int, num_tasks: int, num_gates: int | None = None):
        super().__init__()
        self.experts = make_experts(in_dim, num_experts)
        self.num_tasks, self.num_experts = num_tasks, num_experts
        self.num_gates = num_gates or num_tasks
        self.gates = nn.Linear(in_dim, self.num_gates * num_experts)
        self.out_dim = self.experts.out_dim
        self._register_load_state_dict_pre_hook(upgrade_hook, with_module=True)

    def upgrade_state_dict(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Rewrite, in place, gates saved one Linear per gate by an earlier version (``gates.<g>.weight``)
        as the one Linear they are now (gate g's logits are outputs ``g * E .. g * E + E - 1``)."""
        old = [f"{prefix}gates.{g}." for g in range(self.num_gates)]
        if f"{prefix}gates.weight" in state or f"{old[0]}weight" not in state:
            return
        for kind in ("weight", "bias"):
            state[f"{prefix}gates.{kind}"] = torch.cat([state.pop(f"{o}{kind}") for o in old])

    def last_shared_layer(self) -> list[nn.Module]:
        """The experts' output layer (each expert feeds every task's gate)."""
        return self.experts.last_linear()

    def task_layout(self) -> TaskLayout:
        """The gates' logits, E per task (none with one gate for all tasks)."""
        return TaskLayout(linear("gates", self.num_experts)) if self.num_gates == self.num_tasks else TaskLayout()

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Din] -> [G, B, E]`` each gate's softmax over the experts."""
        logits = self.gates(x).view(x.shape[0], self.num_gates, self.num_experts)  # [B, G, E]
        return torch.softmax(logits, dim=-1).transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Din] -> [T, B, H]``"""
        experts = self.experts(x)  # [E, B, H]
        mixed = torch.einsum("gbe,ebh->gbh", self.gate_weights(x), experts)  # [G, B, H]
        return mixed.expand(self.num_tasks, -1, -1) if self.num_gates == 1 else mixed


class CGCLayer(nn.Module):
    """One Customized Gate Control level of PLE (Tang et al., RecSys 2020).

    Each task has its own experts and a gate over (its experts + the shared experts); unless this is the
    last level, a shared gate over all experts feeds the next level's shared input. The T * Et task
    experts (task t's are ``t * Et .. t * Et + Et - 1``) run as one bank, the S shared experts as another.
    """

    def __init__(self, in_dim: int, make_experts: ExpertFactory, num_tasks: int, task_experts: int, shared_experts: int, last: bool):
        super().__init__()
        self.num_tasks, self.per_task = num_tasks, task_experts
        self.task_experts = make_experts(in_dim, num_tasks * task_experts)
        self.shared_experts = make_experts(in_dim, shared_experts)
        self.task_gates = nn.ModuleList(nn.Linear(in_dim, task_experts + shared_experts) for _ in range(num_tasks))
        self.shared_gate = None if last else nn.Linear(in_dim, num_tasks * task_experts + shared_experts)
        self.out_dim = self.shared_experts.out_dim

    def task_layout(self) -> TaskLayout:
        """Task t's Et experts, its gate, and its Et logits in the shared gate (the S shared experts' after them)."""
        tensors = bank("task_experts", len(self.task_experts.layers), self.per_task)
        if self.shared_gate is not None:
            tensors |= linear("shared_gate", self.per_task)
        return TaskLayout(tensors, ("task_gates",))

    def forward(self, task_inputs: torch.Tensor, shared_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``([T, B, Din], [B, Din]) -> ([T, B, H], [B, H])``; the shared output is only meaningful
        below the last level."""
        shared = self.shared_experts(shared_input)  # [S, B, H]
        own = self.task_experts(task_inputs.repeat_interleave(self.per_task, dim=0))  # [T * Et, B, H]
        outs = []
        for t, gate in enumerate(self.task_gates):
            candidates = torch.cat([own[t * self.per_task:(t + 1) * self.per_task], shared])  # [Et + S, B, H]
            weights = torch.softmax(gate(task_inputs[t]), dim=-1)  # [B, Et + S]
            outs.append(torch.einsum("be,ebh->bh", weights, candidates))
        if self.shared_gate is None:
            return torch.stack(outs), shared_input
        weights = torch.softmax(self.shared_gate(shared_input), dim=-1)  # [B, T * Et + S]
        return torch.stack(outs), torch.einsum("be,ebh->bh", weights, torch.cat([own, shared]))


class PLE(Backbone):
    """Progressive Layered Extraction: stacked CGC levels, task-specific and shared paths kept apart."""

    def __init__(self, in_dim: int, make_experts: ExpertFactory, num_tasks: int, levels: int, task_experts: int, shared_experts: int):
        super().__init__()
        layers = []
        width = in_dim
        for level in range(levels):
            layer = CGCLayer(width, make_experts, num_tasks, task_experts, shared_experts, last=level == levels - 1)
            layers.append(layer)
            width = layer.out_dim
        self.levels = nn.ModuleList(layers)
        self.num_tasks = num_tasks
        self.out_dim = width

    def last_shared_layer(self) -> list[nn.Module]:
        """The output layer of the last level's shared experts (read by every task's gate)."""
        return self.levels[-1].shared_experts.last_linear()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Din] -> [T, B, H]``"""
        task_inputs, shared = x.unsqueeze(0).expand(self.num_tasks, -1, -1), x
        for level in self.levels:
            task_inputs, shared = level(task_inputs, shared)
        return task_inputs


class CrossStitch(Backbone):
    """Cross-stitch networks (Misra et al., 2016): one column per task; after every layer the columns'
    activations are mixed by a learned T x T matrix alpha (initialised near the identity)."""

    def __init__(self, in_dim: int, dims: list[int], num_tasks: int, make_layer: Callable[[int, int], nn.Module], self_weight: float = 0.9):
        super().__init__()
        self.columns = nn.ModuleList()
        self.alphas = nn.ParameterList()
        width = in_dim
        off = (1.0 - self_weight) / max(num_tasks - 1, 1)
        init = torch.full((num_tasks, num_tasks), off).fill_diagonal_(self_weight if num_tasks > 1 else 1.0)
        for dim in dims:
            self.columns.append(nn.ModuleList(make_layer(width, dim) for _ in range(num_tasks)))
            self.alphas.append(nn.Parameter(init.clone()))
            width = dim
        self.num_tasks = num_tasks
        self.out_dim = width

    def last_shared_layer(self) -> list[nn.Module]:
        """None: every column belongs to one task; the alphas only mix them."""
        return []

    def task_layout(self) -> TaskLayout:
        """Task t's column at every layer; row and column t of every alpha."""
        alphas = per_task(1, *(f"alphas.{i}" for i in range(len(self.alphas))), dims=(0, 1))
        return TaskLayout(alphas, tuple(f"columns.{i}" for i in range(len(self.columns))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Din] -> [T, B, H]``"""
        h = x.unsqueeze(0).expand(self.num_tasks, -1, -1)  # [T, B, Din]
        for layers, alpha in zip(self.columns, self.alphas, strict=True):
            h = torch.stack([layer(h[t]) for t, layer in enumerate(layers)])  # [T, B, H_l]
            h = torch.einsum("ts,sbh->tbh", alpha, h)  # task t reads sum_s alpha[t, s] * column s
        return h
