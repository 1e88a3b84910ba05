"""Task- and domain-conditioned gating (PEPNet: Chang et al., KDD 2023, "PEPNet: Parameter and
Embedding Personalized Network for Infusing with Personalized Prior Information").

Notation: B batch, F id features, D embedding dim (``E = F * D`` concatenated), Dd the concatenated
embeddings of the chosen domain features (e.g. the surface or scenario), T tasks, K task-embedding dim.

* ``GateNU`` (the paper's Gate Neural Unit): ``γ · sigmoid(W2 relu(W1 x))``, γ = 2; ``W2`` starts at
  zero, so every gate starts at its neutral value 1 and a gated network starts as the base one.
* ``EmbeddingGate`` (EPNet): scales the shared embeddings element-wise by a gate over the domain
  features' embeddings and the (stop-gradient) embeddings themselves: one network serves every domain,
  with the domain deciding which embedding components count.
* The towers' hidden units are gated per task (PPNet) by ``recsys_mtl.modules.towers.Tower`` with a
  condition ``[task embedding, domain embeddings]`` from ``TaskConditions``.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_mtl.modules.task_layout import TaskLayout, per_task


class GateNU(nn.Module):
    """``[B, In] -> [B, Out]`` gate values in (0, γ), 1 at initialisation."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, gamma: float = 2.0):
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden)
        self.out = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.out.weight)  # γ · sigmoid(0) = 1 with γ = 2: the neutral gate
        nn.init.zeros_(self.out.bias)
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, In] -> [B, Out]``"""
        return self.gamma * torch.sigmoid(self.out(torch.relu(self.hidden(x))))


class EmbeddingGate(nn.Module):
    """EPNet: ``([B, E] embeddings, [B, Dd] domain) -> [B, E]`` the embeddings scaled by the gate."""

    def __init__(self, embedding_dim: int, domain_dim: int, hidden: int = 64, gamma: float = 2.0):
        super().__init__()
        self.gate = GateNU(domain_dim + embedding_dim, embedding_dim, hidden, gamma)

    def forward(self, embedded: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """``([B, E], [B, Dd]) -> [B, E]``; the gate reads the embeddings without steering them."""
        return embedded * self.gate(torch.cat([domain, embedded.detach()], dim=1))


class TaskConditions(nn.Module):
    """``[B, Dd] -> [T, B, K + Dd]``: each task's tower condition, its learned task embedding beside the
    domain features' embeddings."""

    def __init__(self, num_tasks: int, dim: int):
        super().__init__()
        self.tasks = nn.Embedding(num_tasks, dim)

    def task_layout(self) -> TaskLayout:
        """Task t's embedding: row t."""
        return TaskLayout(per_task(1, "tasks.weight"))

    def forward(self, domain: torch.Tensor) -> torch.Tensor:
        """``[B, Dd] -> [T, B, K + Dd]``"""
        num_tasks, batch = self.tasks.num_embeddings, domain.shape[0]
        tasks = self.tasks.weight[:, None, :].expand(num_tasks, batch, -1)  # [T, B, K]
        return torch.cat([tasks, domain.expand(num_tasks, -1, -1)], dim=2)


class DomainGating(nn.Module):
    """PEPNet's two gates for a model: ``embeddings`` (EPNet) over the F features' embeddings and the
    tower conditions ``tasks`` (PPNet's input), both conditioned on the embeddings of the features
    named ``domain_features``."""

    def __init__(self, domain_features: list[str], embedding_dim: int, domain_dim: int, num_tasks: int, task_dim: int, gamma: float = 2.0):
        super().__init__()
        self.domain_features = domain_features
        self.embeddings = EmbeddingGate(embedding_dim, domain_dim, gamma=gamma)
        self.tasks = TaskConditions(num_tasks, task_dim)
        self.condition_dim = task_dim + domain_dim

    def domain(self, per_feature: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{feature: [B, D]} -> [B, Dd]`` the domain features' embeddings, concatenated."""
        return torch.cat([per_feature[name] for name in self.domain_features], dim=1)
