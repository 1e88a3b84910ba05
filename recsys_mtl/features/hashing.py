"""Stable, vectorised id hashing (the same bucket for the same id in every process, run and machine).

Python's ``hash`` is salted per process and pyarrow exposes no public hash kernel, so ids are hashed
here with numpy: int64 ids through the splitmix64 finaliser, strings through a 64-bit polynomial
hash of their UTF-8 bytes computed over the Arrow buffers at once (no per-string Python loop), then
finalised the same way. Arithmetic is uint64 and wraps modulo 2**64 by design.
"""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_PRIME = 0x100000001B3  # odd, so it is invertible modulo 2**64
_PRIME_INV = pow(_PRIME, -1, 2**64)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of a uint64 array (a bijection with good avalanche). ``[N] -> [N]``."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64, copy=True) + _GOLDEN
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def hash_int64(ids: np.ndarray) -> np.ndarray:
    """Stable 64-bit hash of int64 ids. ``[N] int64 -> [N] uint64``."""
    return splitmix64(ids.astype(np.int64, copy=False).view(np.uint64))


class _PowerTable:
    """Cached powers P**i and P**-i (mod 2**64), grown on demand; shared by all threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pow = np.ones(1, dtype=np.uint64)
        self.inv = np.ones(1, dtype=np.uint64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        pow_, inv = self.pow, self.inv
        if len(pow_) >= n:
            return pow_[:n], inv[:n]
        with self._lock:
            size = max(n, 2 * len(self.pow))
            with np.errstate(over="ignore"):
                pow_ = np.cumprod(np.full(size, _PRIME, dtype=np.uint64), dtype=np.uint64)
                inv = np.cumprod(np.full(size, _PRIME_INV, dtype=np.uint64), dtype=np.uint64)
            # index i holds P**i: shift by one so that index 0 is P**0 == 1
            self.pow = np.concatenate([np.ones(1, np.uint64), pow_[:-1]])
            self.inv = np.concatenate([np.ones(1, np.uint64), inv[:-1]])
            return self.pow[:n], self.inv[:n]


_POWERS = _PowerTable()


def hash_strings(array: pa.Array) -> np.ndarray:
    """Stable 64-bit hash of each string (or binary) value. ``[N] -> [N] uint64``; nulls hash as "".

    h(s) = splitmix64(sum_j s[j] * P**j + len(s)), computed for all strings at once: every byte is
    weighted by P**(global position), summed per string with ``reduceat``, then shifted back to the
    string's own start by multiplying with P**-start.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        array = array.cast(pa.large_binary() if pa.types.is_large_string(array.type) else pa.binary())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if pa.types.is_large_binary(array.type) else np.int32)
    offsets = offsets[array.offset : array.offset + len(array) + 1].astype(np.int64)
    data_buf = array.buffers()[2]
    start, stop = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buf, dtype=np.uint8)[start:stop] if data_buf is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1] - start, np.diff(offsets)
    powers, inverse = _POWERS.get(max(len(data), 1))
    with np.errstate(over="ignore"):
        weighted = data.astype(np.uint64) * powers[: len(data)]
        sums = np.zeros(len(array), dtype=np.uint64)
        nonempty = lengths > 0
        if nonempty.any():
            # reduceat on the non-empty segments only: an empty segment would read its neighbour's byte
            sums[nonempty] = np.add.reduceat(weighted, starts[nonempty]) if len(data) else 0
            # reduceat sums to the next listed start, so a run of empty strings is already excluded
        sums *= inverse[starts.clip(0, len(inverse) - 1)]
        sums += lengths.astype(np.uint64)
    return splitmix64(sums)


def bucketize(hashes: np.ndarray, num_embeddings: int) -> np.ndarray:
    """Map 64-bit hashes into buckets 1..num_embeddings-1 (0 stays reserved). ``[N] -> [N] int64``."""
    return (hashes % np.uint64(num_embeddings - 1)).astype(np.int64) + 1
