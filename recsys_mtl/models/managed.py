"""Tables of ``id_map: managed`` features: TorchRec's managed-collision EmbeddingBagCollection.

Each such table gets a ``MCHManagedCollisionModule`` (TorchRec's zero-collision hashing): the feature
processor hashes an id into [0, ``MANAGED_ID_SPACE``) and the module maps each admitted hashed id to a
row of its own. Every ``eviction_interval`` training steps it admits the ids seen since the last
admission, evicting the least recently (LRU) or least often (LFU) seen ones when the table is full; the
embedding row (and optimizer state) of an evicted id is reset before its new id uses it. An id not
admitted reads the table's miss row. Sharded, the table is split row-wise: rank k holds rows
``[k*R, (k+1)*R)`` (``R = ceil(N / W)``) and the ids of the k-th block of the hashed id space, each
shard with its own last row as miss row; unsharded (export, scoring, serving) one sorted map covers all
rows, so an id finds the row it was given at any world size, and an unknown id reads the miss row of
the shard it was routed to in training (``ManagedIds``).

The module's state, per table (buffers, in every checkpoint and artifact)::

    _mch_sorted_raw_ids        [N] int64  admitted hashed ids in sorted order (int64 max: a free slot)
    _mch_remapped_ids_mapping  [N] int64  the row of each
    _mch_last_access_iter      [N] int64  LRU: the step each was last seen   (LFU: _mch_counts, times seen)
    _current_iter_tensor       [1] int64  training steps the module has seen
    _output_segments_tensor [1025] int64  the row boundaries of the shards (-1 padded)
"""

from __future__ import annotations

import math

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.modules.mc_embedding_modules import ManagedCollisionEmbeddingBagCollection
from torchrec.modules.mc_modules import (
    LFU_EvictionPolicy,
    LRU_EvictionPolicy,
    ManagedCollisionCollection,
    MCHManagedCollisionModule,
)
from torchrec.sparse.jagged_tensor import JaggedTensor

from recsys_mtl.config import Config, SparseFeature
from recsys_mtl.features.sparse import MANAGED_ID_SPACE

FREE = torch.iinfo(torch.int64).max  # the raw id of a free slot
MODULES = "_managed_collision_collection._managed_collision_modules."  # + "<table>.<buffer>"
WEIGHTS = "_embedding_module.embedding_bags."  # + "<table>.weight"
METADATA = {"lru": "_mch_last_access_iter", "lfu": "_mch_counts"}


def layout(segments: torch.Tensor) -> torch.Tensor:
    """``[W + 1]`` the row boundaries of the shards from a module's ``_output_segments_tensor``."""
    return segments[segments >= 0]


def miss_rows(ids: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """The miss row of the shard each hashed id routes to, for the row layout ``bounds`` (``[W + 1]``)."""
    shards = len(bounds) - 1
    block = math.ceil(MANAGED_ID_SPACE / shards)  # TorchRec's row-wise routing: one block of ids per rank
    return bounds[1:][(ids // block).clamp(max=shards - 1)] - 1


class ManagedIds(MCHManagedCollisionModule):
    """TorchRec's ``MCHManagedCollisionModule`` whose unknown ids read the same row sharded or not.

    Sharded over W ranks, an id the map does not hold reads the last row of the shard its id routes
    to; TorchRec's module gathered into one (export, scoring, serving) sends every such id to its own
    last row instead, so a model trained on several ranks would score unknown ids with other rows than
    it was trained and evaluated with. Holding the whole table, this module sends an unknown id to the
    miss row of the shard it routes to in the row layout of the state it loaded (its
    ``_output_segments_tensor``, which a checkpoint of W ranks sets to W shards).
    """

    def remap(self, features: dict[str, JaggedTensor], mutate_miss_lengths: bool = True, write_weights=None) -> dict[str, JaggedTensor]:  # noqa: ANN001
        out = super().remap(features)
        bounds = layout(self._output_segments_tensor)
        if len(bounds) <= 2 or self._output_global_offset != 0 or int(bounds[-1]) != self._zch_size:
            return out  # one shard, or a shard of a sharded table: its own last row is the miss row
        for name, feature in features.items():
            ids, rows = feature.values(), out[name].values()
            position = torch.searchsorted(self._mch_sorted_raw_ids[:-1], ids)
            unknown = self._mch_sorted_raw_ids[position] != ids
            rows[unknown] = miss_rows(ids[unknown], bounds)
        return out


def managed_tables(config: Config) -> dict[str, list[SparseFeature]]:
    """The tables of ``id_map: managed`` features (a table's features all are or all are not)."""
    return {t: fs for t, fs in config.features.tables().items() if fs[0].id_map == "managed"}


def build_managed(
    config: Config, tables: list[EmbeddingBagConfig], device: torch.device, world_size: int
) -> ManagedCollisionEmbeddingBagCollection:
    """The managed tables' EmbeddingBagCollection behind their managed-collision modules.
    ``world_size``: the ranks the tables will be sharded over (the hashed id space is cut into one block
    per rank; TorchRec's planner requires the blocks to divide evenly among the ranks)."""
    features = managed_tables(config)
    modules = {}
    for table in tables:
        eviction, interval = features[table.name][0].managed_ids
        modules[table.name] = ManagedIds(
            zch_size=table.num_embeddings,
            device=device,
            eviction_policy=LRU_EvictionPolicy() if eviction == "lru" else LFU_EvictionPolicy(),
            eviction_interval=interval,
            input_hash_size=MANAGED_ID_SPACE,
            buckets=world_size,
        )
    ebc = EmbeddingBagCollection(tables=tables, device=device)
    return ManagedCollisionEmbeddingBagCollection(ebc, ManagedCollisionCollection(modules, tables))


def shard_rows(rows: int, world_size: int) -> list[tuple[int, int]]:
    """``[(first row, rows)]`` of each rank's shard of a row-wise table (TorchRec's split: ceil(N / W)
    rows per rank, the last rank the rest)."""
    block = math.ceil(rows / world_size)
    return [(k * block, max(0, min(block, rows - k * block))) for k in range(world_size)]


def relayout(
    source: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor], eviction: str, world_size: int
) -> tuple[dict[str, torch.Tensor], int]:
    """One managed table's state (``weight`` and the module's buffers, keyed by their names above)
    carried from ``source`` (any size, any world size) into a table shaped as ``fresh`` and sharded over
    ``world_size`` ranks: each admitted id goes to the shard its hashed id routes to, onto a row of its
    own with its embedding and eviction record, the most recently (LRU) or often (LFU) seen first when
    the shard has fewer rows; each miss row starts from the source's miss row of the ids it serves.
    Returns the new state and the number of ids kept. ``fresh`` supplies the initial rows of the rest."""
    meta = METADATA[eviction]
    weight = fresh["weight"].clone()
    rows = weight.shape[0]
    raw, mapping = source["_mch_sorted_raw_ids"], source["_mch_remapped_ids_mapping"]
    admitted = raw != FREE
    # an eviction policy changed since the source: its record does not carry, the ids keep sorted order
    record = source.get(meta, torch.zeros_like(raw))
    raw, old_rows, record = raw[admitted], mapping[admitted], record[admitted]
    block_in = math.ceil(MANAGED_ID_SPACE / world_size)  # the input block each rank admits ids of
    old_bounds = layout(source["_output_segments_tensor"])
    sorted_ids, new_rows, records = [], [], []
    kept = 0
    for k, (start, size) in enumerate(shard_rows(rows, world_size)):
        mine = torch.nonzero(raw // block_in == k).flatten()
        mine = mine[torch.argsort(record[mine], descending=True, stable=True)][: size - 1]  # the last row: miss
        ids = raw[mine]
        order = torch.argsort(ids)
        weight[start : start + len(mine)] = source["weight"][old_rows[mine][order]]
        weight[start + size - 1] = source["weight"][miss_rows(torch.tensor([k * block_in]), old_bounds)]
        free = size - len(mine)
        sorted_ids += [ids[order], torch.full((free,), FREE)]
        new_rows.append(torch.arange(start, start + size))
        records += [record[mine][order], torch.zeros(free, dtype=torch.int64)]
        kept += len(mine)
    segments = [start for start, _ in shard_rows(rows, world_size)] + [rows]
    state = {
        "weight": weight,
        "_mch_sorted_raw_ids": torch.cat(sorted_ids),
        "_mch_remapped_ids_mapping": torch.cat(new_rows),
        meta: torch.cat(records),
        "_current_iter_tensor": source["_current_iter_tensor"].clone(),
        "_output_segments_tensor": torch.tensor(segments + [-1] * (1025 - len(segments)), dtype=torch.int64),
    }
    return state, kept
