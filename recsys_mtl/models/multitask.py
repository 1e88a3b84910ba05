"""The multi-task ranker: embeddings + dense MLP -> backbone -> one tower per output."""

from __future__ import annotations

import torch
from torch import nn
from torchrec import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class MultiTaskModel(nn.Module):
    """Returns ``{tower: [B] logits}`` (towers: ``ctr``, ``cvr``, ``watch_time`` as the tasks need).

    The EmbeddingBagCollection is injected, built on the meta device, so that DistributedModelParallel
    can shard it; probabilities and losses belong to ``recsys_mtl.tasks``, not to the model.
    """

    def __init__(self, ebc: EmbeddingBagCollection, dense_arch: nn.Module, backbone: nn.Module, towers: nn.ModuleDict):
        super().__init__()
        self.ebc = ebc
        self.dense_arch = dense_arch
        self.backbone = backbone
        self.towers = towers

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(KJT with F keys and stride B, [B, Fd]) -> {tower: [B]}``"""
        embedded = self.ebc(sparse).values()  # [B, sum of table dims over features]
        x = torch.cat([embedded, self.dense_arch(dense)], dim=1)  # [B, Din]
        reps = self.backbone(x)  # [T, B, H]
        return {name: tower(reps[i]) for i, (name, tower) in enumerate(self.towers.items())}
