"""Id features: Arrow id columns and id lists -> embedding bucket ids and lengths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_mtl.config import MultiHotFeature, SparseFeature
from recsys_mtl.features.hashing import bucketize, hash_int64, hash_strings
from recsys_mtl.features.vocab import Vocabulary

NULL_BUCKET = 0
# id_map: managed: ids are hashed into [1, MANAGED_ID_SPACE) (null: 0), spread evenly so that TorchRec's
# row-wise input distribution, which routes an id by the block of this space it falls in, balances ranks;
# the managed-collision module then gives each admitted id its row (64-bit hashes: collisions only
# among ~2**31 distinct ids)
MANAGED_ID_SPACE = 2**62


@dataclass
class IdColumn:
    """One id feature of N rows in KJT form.

    values:  [sum(lengths)] int64 bucket ids, row-major
    lengths: [N] int32 ids per row (1 for single-id features)
    nulls:   null ids seen (mapped to bucket 0)
    out_of_range: ids outside [0, num_embeddings-1) with ``id_map: identity``, or not in the
                  vocabulary with ``id_map: vocab`` (mapped to bucket 0)

    With ``id_map: managed`` the values are hashed ids in [0, MANAGED_ID_SPACE) that the model's
    managed-collision module maps to rows.
    """

    values: np.ndarray
    lengths: np.ndarray
    nulls: int
    out_of_range: int


def _as_plain(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array


def map_ids(feature: SparseFeature, array: pa.Array, vocab: Vocabulary | None = None) -> tuple[np.ndarray, int, int]:
    """Bucket ids of a flat id array. ``[N] -> ([N] int64, nulls, out_of_range)``; ``vocab`` is the
    feature's vocabulary with ``id_map: vocab`` (its unknown ids count as out of range)."""
    array = _as_plain(array)
    valid = np.ones(len(array), dtype=bool) if array.null_count == 0 else array.is_valid().to_numpy(zero_copy_only=False)
    n_buckets = feature.num_embeddings
    out_of_range = 0
    if feature.id_map == "vocab":
        if vocab is None:
            raise ValueError(f"feature {feature.name!r} has id_map: vocab but no vocabulary was given")
        buckets = vocab.buckets(array)
        out_of_range = int((valid & (buckets == NULL_BUCKET)).sum())
    elif feature.id_map == "managed":
        n_buckets = MANAGED_ID_SPACE
        ids = array.fill_null(0).to_numpy(zero_copy_only=False) if pa.types.is_integer(array.type) else None
        buckets = bucketize(hash_strings(array) if ids is None else hash_int64(ids), n_buckets)
    elif pa.types.is_integer(array.type):
        ids = array.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        if feature.id_map == "identity":
            in_range = (ids >= 0) & (ids < n_buckets - 1)
            out_of_range = int((valid & ~in_range).sum())
            buckets = np.where(in_range, ids + 1, NULL_BUCKET)
        else:
            buckets = bucketize(hash_int64(ids), n_buckets)
    else:
        buckets = bucketize(hash_strings(array), n_buckets)
    if array.null_count:
        buckets[~valid] = NULL_BUCKET
    return buckets, int(array.null_count), out_of_range


def single_ids(feature: SparseFeature, column: pa.Array | pa.ChunkedArray, vocab: Vocabulary | None = None) -> IdColumn:
    """A one-id-per-row column: every row has length 1 (null ids go to the reserved bucket)."""
    values, nulls, oor = map_ids(feature, _as_plain(column), vocab)
    return IdColumn(values, np.ones(len(values), dtype=np.int32), nulls, oor)


def id_lists(feature: MultiHotFeature, column: pa.Array | pa.ChunkedArray, vocab: Vocabulary | None = None) -> IdColumn:
    """A list-of-ids column: null lists are empty; ``max_length`` keeps the leading ids of each row."""
    column = _as_plain(column)
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int32)
    flat = pc.list_flatten(column)  # honours slicing and skips null lists
    values, nulls, oor = map_ids(feature, flat, vocab)
    if feature.max_length is not None and len(values) and lengths.max() > feature.max_length:
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        position = np.arange(len(values)) - starts  # index of each id within its row
        values = values[position < feature.max_length]
        lengths = np.minimum(lengths, feature.max_length).astype(np.int32)
    return IdColumn(values, lengths, nulls, oor)


def as_unknown(kjt: KeyedJaggedTensor, rate: float, rng: np.random.Generator, keys: set[str]) -> KeyedJaggedTensor:
    """``kjt`` with each id of the features ``keys`` replaced by the reserved bucket (an unknown id) with
    probability ``rate``: training's share of unknown ids, so that row 0 learns what an unseen id predicts."""
    values = kjt.values().clone()  # [sum of lengths]
    of_keys = torch.repeat_interleave(  # [sum of lengths] whether each id belongs to one of ``keys``
        torch.tensor([k in keys for k in kjt.keys()]), torch.tensor(kjt.length_per_key()), output_size=len(values)
    )
    values[torch.from_numpy(rng.random(len(values)) < rate) & of_keys] = NULL_BUCKET
    return KeyedJaggedTensor(keys=kjt.keys(), values=values, lengths=kjt.lengths(), stride=kjt.stride())
