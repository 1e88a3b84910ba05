"""The seed-sequence keys of every random stream of the generator, in one place.

    [seed, split_id, file_index]          a part file's impressions, click, conversion, watch-time noise
    [seed, split_id, file_index, stream]  a part file's label draws of a non-classic objective
    [seed, 2]                             the latent tables
    [seed, 3]                             the calibration sample
    [seed, 4, stream]                     a non-classic objective's own user and item latent tables
    [seed, 5, day, split_id, file_index]          a multi-day run's part file (day >= 1)
    [seed, 5, day, split_id, file_index, stream]  its label draws of a non-classic objective
    [seed, 6, day]                        a multi-day run's popularity ranks of `day`

split_id is 0 (train) or 1 (test); `stream` is the objective's catalogue stream id, at least 1.
numpy's SeedSequence pads a key with zeros, so [a, b] and [a, b, 0] are the same stream: the
non-classic stream ids start at 1 so that no new key reproduces a classic one, and the classic keys
are kept exactly as they were, so the classic columns do not change when objectives are added.
"""

from __future__ import annotations

import numpy as np

TRAIN_SPLIT_ID = 0
TEST_SPLIT_ID = 1
_TABLES_STREAM = 2
_CALIBRATION_STREAM = 3
_OWN_TABLES_STREAM = 4
_DAY_PART_STREAM = 5
_DAY_POPULARITY_STREAM = 6


def _check_stream(stream: int) -> None:
    """Raise ValueError for a stream id of 0 or less (it would alias a classic stream)."""
    if stream < 1:
        raise ValueError(f"objective stream ids start at 1, got {stream}")


def tables_rng(seed: int) -> np.random.Generator:
    """The stream of the latent tables."""
    return np.random.default_rng([seed, _TABLES_STREAM])


def calibration_rng(seed: int) -> np.random.Generator:
    """The stream of the calibration sample."""
    return np.random.default_rng([seed, _CALIBRATION_STREAM])


def own_tables_rng(seed: int, stream: int) -> np.random.Generator:
    """The stream of one non-classic objective's own latent tables."""
    _check_stream(stream)
    return np.random.default_rng([seed, _OWN_TABLES_STREAM, stream])


def _part_key(seed: int, split_id: int, file_index: int, day: int | None) -> list[int]:
    """The key of one part file: [seed, split_id, file_index], or [seed, 5, day, ...] for a day."""
    if day is None:
        return [seed, split_id, file_index]
    if day < 1:
        raise ValueError(f"days are numbered from 1, got {day}")
    return [seed, _DAY_PART_STREAM, day, split_id, file_index]


def part_rng(seed: int, split_id: int, file_index: int, day: int | None = None) -> np.random.Generator:
    """The stream of one part file's impressions and classic labels (of `day` in a multi-day run)."""
    return np.random.default_rng(_part_key(seed, split_id, file_index, day))


def label_rng(
    seed: int, split_id: int, file_index: int, stream: int, day: int | None = None
) -> np.random.Generator:
    """The stream of one part file's draws of one non-classic objective's label."""
    _check_stream(stream)
    return np.random.default_rng([*_part_key(seed, split_id, file_index, day), stream])


def popularity_rng(seed: int, day: int) -> np.random.Generator:
    """The stream of a multi-day run's popularity ranks of `day` (1-based)."""
    return np.random.default_rng([seed, _DAY_POPULARITY_STREAM, day])
