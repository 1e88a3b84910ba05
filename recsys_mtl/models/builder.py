"""Config -> modules: the only place that reads the model and task sections of a config."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.models.dlrm import InteractionArch

from recsys_mtl.balancing.build import build_balancer
from recsys_mtl.config import Config, ConfigError, MultiHotFeature
from recsys_mtl.models.adapters import insert_adapters
from recsys_mtl.models.managed import build_managed
from recsys_mtl.models.multitask import MultiTaskModel
from recsys_mtl.modules.aitm import AITM
from recsys_mtl.modules.backbones import PLE, CrossStitch, MMoE, SharedBottom
from recsys_mtl.modules.experts import ExpertBank
from recsys_mtl.modules.gating import DomainGating
from recsys_mtl.modules.mlp import MLP
from recsys_mtl.modules.sluice import Sluice
from recsys_mtl.modules.soft_sharing import SoftSharing
from recsys_mtl.modules.sparse_moe import SparseMoE
from recsys_mtl.modules.towers import Tower
from recsys_mtl.tasks.train_module import MultiTaskTrainModule


def table_configs(config: Config, managed: bool = False) -> list[EmbeddingBagConfig]:
    """One EmbeddingBagConfig per table (features naming the same ``table`` share one): the tables of
    ``id_map: managed`` features with ``managed``, the others without."""
    out = []
    for table, features in config.features.tables().items():
        if (features[0].id_map == "managed") != managed:
            continue
        pooling = next((f.pooling for f in features if isinstance(f, MultiHotFeature)), "sum")
        out.append(
            EmbeddingBagConfig(
                name=table,
                embedding_dim=features[0].dim,
                num_embeddings=features[0].num_embeddings,
                feature_names=[f.name for f in features],
                pooling=PoolingType.MEAN if pooling == "mean" else PoolingType.SUM,
            )
        )
    return out


def native_bf16() -> bool:
    """Whether this machine runs bf16 matrix products natively (CUDA with bf16, or oneDNN's CPU check)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def compute_dtype(precision: str) -> torch.dtype | None:
    """``model.precision`` -> the backbone's autocast dtype (None: float32)."""
    if precision == "bf16" or (precision == "auto" and native_bf16()):
        return torch.bfloat16
    return None


def embedding_order(config: Config) -> list[str]:
    """The id features in the order their embeddings enter the network: the plain tables' features,
    then the managed tables' (each table's features together, tables in order of first use)."""
    tables = config.features.tables().values()
    return [f.name for managed in (False, True) for fs in tables if (fs[0].id_map == "managed") == managed for f in fs]


def build_model(config: Config, device: torch.device | str = "meta", world_size: int = 1) -> MultiTaskModel:
    """The model with its embedding tables on ``device`` ("meta" for DistributedModelParallel over
    ``world_size`` ranks; "cpu" for an unsharded copy, e.g. to load a checkpoint at any world size)."""
    m = config.model
    towers = [t.name for t in config.tasks]  # one tower per task, named by it
    device = torch.device(device)
    plain, managed = table_configs(config), table_configs(config, managed=True)
    ebc = EmbeddingBagCollection(tables=plain, device=device) if plain else None
    mc_ebc = build_managed(config, managed, device, world_size) if managed else None
    id_features = config.features.id_features
    interaction = None
    if config.uses_dot_interaction():
        # the dense projection joins the dot products, so it ends at the embedding dim
        dim = id_features[0].dim
        dense_arch = MLP(len(config.features.dense), (*m.dense_dims, dim), m.activation, m.dropout)
        interaction = InteractionArch(num_sparse_features=len(id_features))
        num_vectors = len(id_features) + 1
        in_dim = len(id_features) * dim + dim + num_vectors * (num_vectors - 1) // 2
    else:
        dense_arch = MLP(len(config.features.dense), m.dense_dims, m.activation, m.dropout)
        in_dim = sum(f.dim for f in id_features) + dense_arch.out_dim
    make_experts = partial(ExpertBank, dims=m.hidden_dims, activation=m.activation, dropout=m.dropout)
    num = len(towers)
    backbone: nn.Module
    if m.backbone == "shared_bottom":
        backbone = SharedBottom(MLP(in_dim, m.hidden_dims, m.activation, m.dropout), num)
    elif m.backbone == "mmoe":
        backbone = MMoE(in_dim, make_experts, m.num_experts, num)
    elif m.backbone == "ple":
        backbone = PLE(in_dim, make_experts, num, m.ple_levels, m.ple_task_experts, m.ple_shared_experts)
    elif m.backbone == "sparse_moe":
        backbone = SparseMoE(in_dim, make_experts, m.num_experts, num, k=m.moe_top_k, router=m.moe_router, balance=m.moe_balance)
    elif m.backbone == "soft_sharing":
        backbone = SoftSharing(in_dim, make_experts, num, strength=m.soft_sharing_strength, penalty=m.soft_sharing_penalty)
    else:
        layer = partial(_layer, activation=m.activation, dropout=m.dropout)
        if m.backbone == "sluice":
            backbone = Sluice(in_dim, list(m.hidden_dims), num, layer, subspaces=m.sluice_subspaces, orthogonality=m.sluice_orthogonality)
        else:
            backbone = CrossStitch(in_dim, list(m.hidden_dims), num, layer)
    gating = None
    if m.gating is not None:
        dim_of = {f.name: f.dim for f in id_features}
        domain_dim = sum(dim_of[name] for name in m.gating.domain_features)
        embedding_dim = sum(f.dim for f in id_features)
        gating = DomainGating(list(m.gating.domain_features), embedding_dim, domain_dim, num, m.gating.task_dim, m.gating.gamma)
    condition_dim = gating.condition_dim if gating is not None else 0
    heads = nn.ModuleDict({
        name: Tower(backbone.out_dim, m.tower_dims, m.activation, m.dropout, condition_dim=condition_dim, gamma=m.gating.gamma if m.gating else 2.0)
        for name in towers
    })
    transfer = None
    if m.tower_transfer == "aitm":
        transfer = AITM({t.name: t.after for t in config.tasks if t.after}, next(iter(heads.values())).out_dim)
    model = MultiTaskModel(
        embedding_order(config), ebc, mc_ebc, dense_arch, backbone, heads, interaction, compute_dtype(m.precision), gating, transfer
    )
    if config.adapt is not None:  # frozen base + adapters, before DMP sees the parameters
        insert_adapters(model, config)
    return model


def _layer(in_dim: int, out_dim: int, activation: str, dropout: float) -> MLP:
    """One column layer of cross-stitch and sluice networks."""
    return MLP(in_dim, [out_dim], activation, dropout)


def backbone_input_columns(config: Config) -> list[str]:
    """A name for each column of the backbone's input ``x`` (``MultiTaskModel.forward``), in order:
    ``<feature>[k]`` embedding components, ``dense[k]`` the dense projection, and with the dot
    interaction ``<a>*<b>`` the pairwise dot products (torchrec's ``InteractionArch``: the upper triangle,
    row-major, over the dense projection then the id features). Warm start maps the columns of the
    layers that read ``x`` by these names when features are added or removed."""
    dim_of = {f.name: f.dim for f in config.features.id_features}
    order = embedding_order(config)
    names = [f"{name}[{k}]" for name in order for k in range(dim_of[name])]
    if config.uses_dot_interaction():
        id_features = config.features.id_features
        vectors = ["dense", *order]
        names += [f"dense[{k}]" for k in range(id_features[0].dim)]
        rows, cols = torch.triu_indices(len(vectors), len(vectors), offset=1).tolist()
        return names + [f"{vectors[i]}*{vectors[j]}" for i, j in zip(rows, cols, strict=True)]
    dims = config.model.dense_dims
    if dims:
        return names + [f"dense[{k}]" for k in range(dims[-1])]
    return names + [f"dense:{f.name}" for f in config.features.dense]


def build_train_module(config: Config, device: torch.device | str = "meta", world_size: int = 1) -> MultiTaskTrainModule:
    """The model with its task losses and the configured loss balancer (what training shards over
    ``world_size`` ranks, and checkpoints)."""
    tasks = config.task_specs()
    model = build_model(config, device, world_size)
    balancing = config.train.balancing
    if balancing.strategy == "gradnorm" and not model.last_shared_parameters():
        raise ConfigError(
            "train.balancing.strategy=gradnorm needs a layer every task reads; this model has no hidden or "
            "dense layers (set model.hidden_dims or model.dense_dims, or pick another strategy)"
        )
    balancer = build_balancer(balancing, tasks, config.train.seed, len(model.shared_parameters()))
    return MultiTaskTrainModule(model, tasks, balancer)
