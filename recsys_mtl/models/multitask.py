"""The multi-task ranker: embeddings + dense MLP -> backbone -> one tower per output."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from torch.nn import functional as F
from torchrec import EmbeddingBagCollection
from torchrec.models.dlrm import InteractionArch
from torchrec.modules.mc_embedding_modules import ManagedCollisionEmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_mtl.models.routing import Routing
from recsys_mtl.modules.aitm import AITM
from recsys_mtl.modules.gating import DomainGating
from recsys_mtl.modules.lora import DomainRows, domain_rows


class MultiTaskModel(nn.Module):
    """Returns ``{tower: [B] logits}``, one tower per task, named by the task.

    The embedding tables are injected, built on the meta device, so that DistributedModelParallel can
    shard them: ``ebc`` holds the tables of hashed, identity and vocabulary ids, ``managed`` (TorchRec's
    ManagedCollisionEmbeddingBagCollection) those of ``id_map: managed`` ids; either may be None when
    no table is of its kind. Both read the same KJT, each its own keys. Probabilities and losses belong
    to ``recsys_mtl.tasks``, not to the model.

    ``compute_dtype`` (optional, e.g. bfloat16) runs the backbone under autocast: on hardware with
    native bf16 its matrix products take less than half the time of float32 ones.

    ``gating`` (optional, PEPNet) scales the embeddings and the towers' hidden units by gates
    conditioned on the domain features' embeddings and each task's embedding; ``transfer`` (optional,
    AITM) lets each funnel stage's tower read the stage above it.

    ``interaction`` (optional) is torchrec's DLRM InteractionArch: with it the backbone also sees the
    pairwise dot products of the F feature embeddings and the dense projection, which an MLP over
    concatenated embeddings learns only slowly.

    ``domain`` (set with per-domain adapters, ``adapt.domain_feature``): ``(k, D)``, the position of the
    domain feature among the KJT's keys and its bucket count; each row's bucket picks its adapters.
    """

    def __init__(
        self,
        feature_names: list[str],
        ebc: EmbeddingBagCollection | None,
        managed: ManagedCollisionEmbeddingBagCollection | None,
        dense_arch: nn.Module,
        backbone: nn.Module,
        towers: nn.ModuleDict,
        interaction: InteractionArch | None = None,
        compute_dtype: torch.dtype | None = None,
        gating: DomainGating | None = None,
        transfer: AITM | None = None,
    ):
        super().__init__()
        # the backbone runs under autocast to this dtype (None: float32); the towers read float32
        self.compute_dtype = compute_dtype
        # the order in which embeddings enter the network; a sharded EBC returns its features in an
        # order that depends on the sharding plan, so they are gathered by name, never by position
        self.feature_names = feature_names
        self.ebc = ebc
        self.managed = managed
        self.dense_arch = dense_arch
        self.interaction = interaction
        self.backbone = backbone
        self.towers = towers
        self.gating = gating
        self.transfer = transfer
        # set by ``models.adapters.insert_adapters`` (``adapt:``): detach the pooled embeddings; run the
        # dense part once per group of tasks that read different adapters; the domain feature's (key, buckets)
        self.freeze_embeddings = False
        self.routing: Routing | None = None
        self.domain: tuple[int, int] | None = None

    def shared_parameters(self) -> list[nn.Parameter]:
        """The dense parameters below the towers (dense MLP and backbone): those several tasks' losses
        reach. PCGrad projects the tasks' gradients on these; the embeddings are left to the fused
        optimizer, which sees the summed loss only."""
        return [p for module in (self.dense_arch, self.backbone) for p in module.parameters() if p.requires_grad]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the last layer every task reads: the backbone's last shared layer, or the
        dense MLP's last layer when the backbone shares none (cross-stitch). GradNorm's ``W``."""
        layers = self.backbone.last_shared_layer() or self.dense_arch.last_linear()
        return [p for layer in layers for p in layer.parameters() if p.requires_grad]

    def represent(self, embedded: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """``([B, F * D], [B, Fd]) -> [T, B, H]`` float32: the dense MLP, the interaction and the backbone."""
        dense_out = self.dense_arch(dense)  # [B, Dd] (Dd == D with the interaction)
        if self.interaction is None:
            x = torch.cat([embedded, dense_out], dim=1)  # [B, Din]
        else:
            stacked = embedded.view(embedded.shape[0], -1, dense_out.shape[1])  # [B, F, D]
            # [B, F*D + D + (F+1)F/2]: raw embeddings, dense projection, pairwise dots
            x = torch.cat([embedded, self.interaction(dense_out, stacked)], dim=1)
        # the device of a weight, not of x: the train pipeline fx-traces forward with x a proxy
        device_type = next(self.towers.parameters()).device.type
        with torch.autocast(device_type, dtype=self.compute_dtype or torch.float32, enabled=self.compute_dtype is not None):
            reps = self.backbone(x)  # [T, B, H]
        return reps.float()

    def domain_of(self, sparse: KeyedJaggedTensor) -> DomainRows:
        """``KJT (stride B) -> [B, D]`` bool: row b's bucket of the domain feature, one-hot (no bucket on a
        padding row, which has no id). Read from the local batch's lengths and offsets: no host sync."""
        assert self.domain is not None
        key, count = self.domain
        stride = sparse.stride()
        lengths = sparse.lengths()[key * stride:(key + 1) * stride]  # [B]: 1 (one id per row), 0 on padding
        starts = sparse.offsets()[key * stride:(key + 1) * stride]  # [B]
        ids = F.pad(sparse.values(), (0, 1))[starts]  # [B]; a padding row may point one past the last id
        buckets = torch.arange(count, device=next(self.towers.parameters()).device)  # not ids.device: fx-traced
        return (ids[:, None] == buckets) & (lengths[:, None] > 0)

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(KJT with F keys and stride B, [B, Fd]) -> {tower: [B]}``"""
        per_feature = {} if self.ebc is None else self.ebc(sparse).to_dict()  # {feature: [B, D]}
        if self.managed is not None:
            pooled, _ = self.managed(sparse)  # (KeyedTensor, remapped ids: None, not asked for)
            per_feature.update(pooled.to_dict())
        if self.freeze_embeddings:  # adaptation: no gradient reaches the tables, so the fused optimizer leaves them
            per_feature = {name: per_feature[name].detach() for name in self.feature_names}  # by name: fx-traceable
        embedded = torch.cat([per_feature[name] for name in self.feature_names], dim=1)  # [B, F * D]
        conditions = None
        if self.gating is not None:
            domain = self.gating.domain(per_feature)  # [B, Dd]
            embedded = self.gating.embeddings(embedded, domain)
            conditions = self.gating.tasks(domain)  # [T, B, K + Dd]
        with nullcontext() if self.domain is None else domain_rows(self, self.domain_of(sparse)):
            reps = self.represent(embedded, dense) if self.routing is None else self.routing.run(self, lambda: self.represent(embedded, dense))
            q = {
                name: tower.hidden(reps[i], None if conditions is None else conditions[i])  # [B, Ht]
                for i, (name, tower) in enumerate(self.towers.items())
            }
            z = q if self.transfer is None else self.transfer(q)
            return {name: tower.head(z[name]).squeeze(-1) for name, tower in self.towers.items()}
