"""``id_map: managed`` (issue 15, item 4): TorchRec's managed-collision tables, their re-layout for
warm start, and the CPU reset of evicted rows."""

from __future__ import annotations

import pytest
import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    SplitTableBatchedEmbeddingBagsCodegen,
)
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_mtl.config import ConfigError, load_config
from recsys_mtl.features.sparse import MANAGED_ID_SPACE
from recsys_mtl.models.builder import build_model
from recsys_mtl.models.managed import FREE, MODULES, WEIGHTS, relayout, shard_rows
from recsys_mtl.train.managed_sharding import reset_host_rows
from recsys_mtl.train.sharding import constraints

ROWS = 64


def managed_config(small_config_path, eviction="lru", rows=ROWS, *extra):
    return load_config(small_config_path, [
        "features.sparse.0.id_map=managed", f"features.sparse.0.num_embeddings={rows}", f"features.sparse.0.eviction={eviction}",
        "features.sparse.0.eviction_interval=1", *extra,
    ])


def table_state(model, table="user_id") -> dict[str, torch.Tensor]:
    state = model.managed.state_dict()
    names = {f"{MODULES}{table}.": "", f"{WEIGHTS}{table}.": ""}
    return {key[len(p):]: v.clone() for key, v in state.items() for p in names if key.startswith(p)}


def user_kjt(config, users: torch.Tensor) -> KeyedJaggedTensor:
    """A batch with only ``users`` (hashed ids) for user_id; every other id feature empty."""
    keys = [f.name for f in config.features.id_features]
    lengths = torch.tensor([1 if k == "user_id" else 0 for k in keys for _ in users], dtype=torch.int32)
    return KeyedJaggedTensor(keys=keys, values=users, lengths=lengths)


def admit(model, config, batches: list[torch.Tensor]) -> None:
    """Training-mode forwards of the managed tables: each batch's ids are admitted (eviction_interval 1)."""
    model.managed.train()
    for users in batches:
        model.managed(user_kjt(config, users))
    model.managed.eval()


def pooled(model, config, users: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` the user_id embedding each hashed id reads (eval mode: nothing admitted)."""
    out, _ = model.managed(user_kjt(config, users))
    return out.to_dict()["user_id"]


def test_admitted_ids_get_rows_of_their_own_and_unknown_ids_the_miss_row(small_config_path):
    config = managed_config(small_config_path)
    model = build_model(config, "cpu").eval()
    ids = torch.randint(1, MANAGED_ID_SPACE, (40,))
    admit(model, config, [ids[:20], ids[20:]])
    state = table_state(model)
    held = state["_mch_sorted_raw_ids"]
    assert set(held[held != FREE].tolist()) == set(ids.tolist())
    rows = state["_mch_remapped_ids_mapping"][torch.searchsorted(held, ids)]
    assert len(set(rows.tolist())) == 40 and ROWS - 1 not in rows.tolist()  # no collisions; the miss row kept free
    weight = state["weight"]
    torch.testing.assert_close(pooled(model, config, ids), weight[rows], rtol=0, atol=0)
    unseen = torch.tensor([5, 7])
    torch.testing.assert_close(pooled(model, config, unseen), weight[[ROWS - 1, ROWS - 1]], rtol=0, atol=0)


@pytest.mark.parametrize("eviction", ["lru", "lfu"])
def test_relayout_keeps_ids_on_their_ranks_with_their_rows_and_the_most_used_first(small_config_path, eviction):
    config = managed_config(small_config_path, eviction)
    source_model = build_model(config, "cpu").eval()
    ids = torch.randint(1, MANAGED_ID_SPACE, (50,))
    # ids[:10] seen twice, last: the most recent and the most frequent
    admit(source_model, config, [torch.cat([ids[:10], ids[10:30]]), ids[30:], ids[:10]])
    source = table_state(source_model)
    target_config = managed_config(small_config_path, eviction, 32)
    target_model = build_model(target_config, "cpu", world_size=2).eval()
    state, kept = relayout(source, table_state(target_model), eviction, world_size=2)
    held, rows = state["_mch_sorted_raw_ids"], state["_mch_remapped_ids_mapping"]
    block = -(-MANAGED_ID_SPACE // 2)
    assert kept == sum(min(15, int((ids // block == k).sum())) for k in range(2))  # 16 rows a shard, one the miss row
    for k, (start, size) in enumerate(shard_rows(32, 2)):
        shard_ids = held[start : start + size]
        admitted = shard_ids[shard_ids != FREE]
        assert bool((admitted // block == k).all())  # each id on the shard its id routes to
        assert bool((shard_ids[1:] >= shard_ids[:-1]).all()) and shard_ids[-1] == FREE  # sorted; the miss row free
        torch.testing.assert_close(rows[start : start + size], torch.arange(start, start + size))
        wanted = ids[:10][ids[:10] // block == k]
        assert set(wanted.tolist()) <= set(admitted.tolist())  # the most used ids kept first
        torch.testing.assert_close(state["weight"][start + size - 1], source["weight"][-1], rtol=0, atol=0)
    # every kept id reads the embedding it had, in the unsharded model the new state loads into
    target_model.managed.load_state_dict({f"{MODULES}user_id.{k}" if k != "weight" else f"{WEIGHTS}user_id.weight": v
                                          for k, v in state.items()}, strict=False)
    kept_ids = held[held != FREE]
    torch.testing.assert_close(pooled(target_model, config, kept_ids), pooled(source_model, config, kept_ids), rtol=0, atol=0)


@pytest.mark.parametrize("optimizer", [EmbOptimType.EXACT_ROWWISE_ADAGRAD, EmbOptimType.EXACT_ADAGRAD, EmbOptimType.EXACT_SGD])
def test_reset_host_rows_reinitialises_weights_and_zeroes_optimizer_state(optimizer):
    dim = 4
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        [(6, dim, EmbeddingLocation.HOST, ComputeDevice.CPU), (10, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)],
        optimizer=optimizer,
    )
    width = {EmbOptimType.EXACT_ROWWISE_ADAGRAD: 1, EmbOptimType.EXACT_ADAGRAD: dim}.get(optimizer)
    with torch.no_grad():
        tbe.weights_host.fill_(1.0)
        tbe.momentum1_host.fill_(2.0)
    reset_host_rows(tbe, 1, torch.tensor([0, 7]), lambda t: t.fill_(0.5))
    weights = tbe.weights_host.detach()
    table = weights[int(tbe.weights_offsets[1]):].view(10, dim)
    torch.testing.assert_close(table[[0, 7]], torch.full((2, dim), 0.5))
    torch.testing.assert_close(table[[1, 2, 3, 4, 5, 6, 8, 9]], torch.ones(8, dim))  # the other rows untouched
    torch.testing.assert_close(weights[: 6 * dim], torch.ones(6 * dim))  # and the other table
    if width is not None:
        state = tbe.momentum1_host[int(tbe.momentum1_offsets[1]):].view(10, width)
        torch.testing.assert_close(state[[0, 7]], torch.zeros(2, width))
        torch.testing.assert_close(state[[1, 9]], torch.full((2, width), 2.0))


def test_managed_keys_are_checked(small_config_path):
    with pytest.raises(ConfigError, match="eviction is for id_map: managed"):
        load_config(small_config_path, ["features.sparse.0.eviction=lfu"])
    with pytest.raises(ConfigError, match="must agree on num_embeddings and dim, .*id_map: managed"):
        load_config(small_config_path, ["features.sparse.0.id_map=managed", "features.sparse.0.table=t", "features.sparse.1.table=t",
                                        "features.sparse.1.num_embeddings=100001"])
    config = managed_config(small_config_path, "lru", ROWS, "train.sharding={user_id: table_wise}")
    with pytest.raises(ConfigError, match="train.sharding.user_id: table_wise; .*row_wise only"):
        constraints(config, torch.device("cpu"))
