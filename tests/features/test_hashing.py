from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_mtl.features.hashing import bucketize, hash_int64, hash_strings

MASK = 2**64 - 1
P = 0x100000001B3


def splitmix64_ref(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def string_hash_ref(s: str) -> int:
    data = s.encode()
    return splitmix64_ref((sum(b * pow(P, j, 2**64) for j, b in enumerate(data)) + len(data)) & MASK)


def test_golden_values_never_change():
    # A served model's embedding rows are addressed by these hashes: changing them silently breaks
    # every trained model, so they are pinned.
    ints = hash_int64(np.array([0, 1, -1, 2**62, 123456789], dtype=np.int64))
    assert ints.tolist() == [
        16294208416658607535, 10451216379200822465, 16490336266968443936, 47939714376772075, 2466975172287755897
    ]
    strings = hash_strings(pa.array(["", "a", "user_42", "héllo"]))
    assert strings.tolist() == [16294208416658607535, 17360999193197444373, 16469671106320836717, 14946776555499160849]


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50))
def test_int_hash_matches_reference(values):
    got = hash_int64(np.array(values, dtype=np.int64))
    assert got.tolist() == [splitmix64_ref(v & MASK) for v in values]


@settings(max_examples=200)
@given(st.lists(st.text(max_size=12), max_size=40), st.integers(0, 5), st.booleans())
def test_string_hash_matches_reference_on_slices_and_large_strings(values, cut, large):
    arr = pa.array(values, type=pa.large_string() if large else pa.string())
    sliced = arr.slice(min(cut, len(values)))
    assert hash_strings(sliced).tolist() == [string_hash_ref(s) for s in values[min(cut, len(values)) :]]


def test_chunked_and_dictionary_free_inputs_agree():
    values = ["x", "yy", "", "zzz"] * 3
    chunked = pa.chunked_array([values[:5], values[5:]])
    np.testing.assert_array_equal(hash_strings(chunked), hash_strings(pa.array(values)))


@pytest.mark.parametrize("n", [2, 11, 1000, 200_001])
def test_buckets_stay_in_range_and_spread(n):
    h = hash_int64(np.arange(200_000, dtype=np.int64))
    b = bucketize(h, n)
    assert b.min() >= 1 and b.max() <= n - 1
    counts = np.bincount(b, minlength=n)[1:]
    if n <= 1000:  # every bucket used, none more than 25 % above the mean load
        assert counts.min() > 0
        assert counts.max() < 1.25 * counts.mean()
