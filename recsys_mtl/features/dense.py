"""Dense features: statistics from the train split (computed once, saved) and the transforms."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_mtl.config import DenseFeature


@dataclass(frozen=True)
class DenseStat:
    """Moments of one raw dense column over its finite, non-null values."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    missing: int  # null or non-finite values seen


@dataclass
class _Running:
    """Streaming moments merged chunk by chunk (Chan et al.), stable for long runs of float64."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = float("inf")
    hi: float = float("-inf")
    missing: int = 0

    def add(self, x: np.ndarray, missing: int) -> None:
        self.missing += missing
        n = len(x)
        if n == 0:
            return
        mean, m2 = float(x.mean()), float(((x - x.mean()) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))

    def finish(self) -> DenseStat:
        std = (self.m2 / self.count) ** 0.5 if self.count else 0.0
        lo, hi = (self.lo, self.hi) if self.count else (0.0, 0.0)
        return DenseStat(self.count, self.mean, std, lo, hi, self.missing)


def raw_values(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A dense column as float64 with a mask of usable values. ``[N] -> ([N] float64, [N] bool)``."""
    # unsafe: integers past 2**53 round to the nearest double instead of failing the cast
    x = pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False)  # nulls become NaN
    return x, np.isfinite(x)


class DenseStats:
    """Per-feature statistics keyed by feature name; saved with the run and the serving artifact."""

    def __init__(self, stats: dict[str, DenseStat]):
        self.stats = dict(stats)

    def __getitem__(self, name: str) -> DenseStat:
        return self.stats[name]

    def __contains__(self, name: str) -> bool:
        return name in self.stats

    @classmethod
    def compute(cls, features: Iterable[DenseFeature], tables: Iterable[pa.Table]) -> DenseStats:
        """One streaming pass over ``tables`` (e.g. the train split's row groups)."""
        features = list(features)
        if not features:
            return cls({})
        running = {f.name: _Running() for f in features}
        for table in tables:
            for f in features:
                x, ok = raw_values(table.column(f.source_column))
                running[f.name].add(x[ok], int((~ok).sum()))
        return cls({name: r.finish() for name, r in running.items()})

    @classmethod
    def of_source(cls, features: Iterable[DenseFeature], source) -> DenseStats:
        """Statistics of a ``ParquetSource`` (reading only the dense columns, a row group at a time)."""
        features = list(features)
        return cls.compute(features, source.iter_tables([f.source_column for f in features]) if features else [])

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {name: asdict(s) for name, s in self.stats.items()}

    @classmethod
    def from_dict(cls, d: dict[str, dict[str, float]]) -> DenseStats:
        return cls({name: DenseStat(**s) for name, s in d.items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> DenseStats:
        return cls.from_dict(json.loads(Path(path).read_text()))


_F32 = np.finfo(np.float32)


def needs_stats(feature: DenseFeature) -> bool:
    """Whether the feature's transform or fill depends on train statistics."""
    return feature.transform == "standardize" or feature.fill == "mean"


def transform(feature: DenseFeature, x: np.ndarray, stat: DenseStat | None) -> np.ndarray:
    """Fill unusable values and apply the feature's transform. ``[N] float64 -> [N] float32``.

    ``x`` must already have its null / non-finite entries set to the fill value.
    """
    with np.errstate(over="ignore"):  # huge values saturate below, as float32 holds them
        if feature.transform == "log1p":
            x = np.sign(x) * np.log1p(np.abs(x))
        elif feature.transform == "standardize":
            assert stat is not None
            x = (x - stat.mean) / (stat.std if stat.std > 0 else 1.0)
    # saturate at float32's range: an overflow to inf would make every output of the row NaN
    return np.clip(x, _F32.min, _F32.max).astype(np.float32)


def fill_value(feature: DenseFeature, stat: DenseStat | None) -> float:
    if feature.fill == "mean":
        assert stat is not None
        return stat.mean
    return float(feature.fill)
