"""Row-by-row reference of the id mapping, written independently of the vectorised code under test."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recsys_mtl.config import MultiHotFeature, SparseFeature
from recsys_mtl.features.hashing import bucketize, hash_int64, hash_strings


def bucket_of(feature: SparseFeature, value) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return int(bucketize(hash_strings(pa.array([value])), feature.num_embeddings)[0])
    if feature.id_map == "identity":
        return value + 1 if 0 <= value < feature.num_embeddings - 1 else 0
    return int(bucketize(hash_int64(np.array([value], dtype=np.int64)), feature.num_embeddings)[0])


def expected_rows(feature: SparseFeature, values: list) -> list[list[int]]:
    """Per row, the bucket ids the KJT must hold for this feature (pyarrow ``to_pylist`` input)."""
    if isinstance(feature, MultiHotFeature):
        rows = [[bucket_of(feature, v) for v in (lst or [])] for lst in values]
        return [r[: feature.max_length] if feature.max_length else r for r in rows]
    return [[bucket_of(feature, v)] for v in values]
