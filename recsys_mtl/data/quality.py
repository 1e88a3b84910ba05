"""Data-quality counts gathered while reading (SPEC §2): they go to the training log and the report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataQuality:
    """Counts of what reading found. ``dropped_by_reason`` counts a row once per reason it fails,
    ``rows_dropped`` once per row; null / out-of-range ids and filled dense values are kept rows."""

    rows_read: int = 0
    rows_dropped: int = 0
    dropped_by_reason: Counter = field(default_factory=Counter)
    null_ids: Counter = field(default_factory=Counter)
    out_of_range_ids: Counter = field(default_factory=Counter)
    filled_dense: Counter = field(default_factory=Counter)
    empty_files: list[str] = field(default_factory=list)

    def merge(self, other: DataQuality) -> None:
        """Add ``other``'s counts into this one (e.g. across ranks or splits)."""
        self.rows_read += other.rows_read
        self.rows_dropped += other.rows_dropped
        self.dropped_by_reason.update(other.dropped_by_reason)
        self.null_ids.update(other.null_ids)
        self.out_of_range_ids.update(other.out_of_range_ids)
        self.filled_dense.update(other.filled_dense)
        self.empty_files.extend(f for f in other.empty_files if f not in self.empty_files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_dropped": self.rows_dropped,
            "dropped_by_reason": dict(sorted(self.dropped_by_reason.items())),
            "null_ids": dict(sorted(self.null_ids.items())),
            "out_of_range_ids": dict(sorted(self.out_of_range_ids.items())),
            "filled_dense": dict(sorted(self.filled_dense.items())),
            "empty_files": list(self.empty_files),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataQuality:
        return cls(
            rows_read=int(d["rows_read"]),
            rows_dropped=int(d["rows_dropped"]),
            dropped_by_reason=Counter(d["dropped_by_reason"]),
            null_ids=Counter(d["null_ids"]),
            out_of_range_ids=Counter(d["out_of_range_ids"]),
            filled_dense=Counter(d["filled_dense"]),
            empty_files=list(d["empty_files"]),
        )


def sum_over_ranks(quality: DataQuality) -> DataQuality:
    """Every rank's counts added up (this rank's own when there is no process group)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return quality
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, quality.to_dict())
    total = DataQuality()
    for part in parts:
        total.merge(DataQuality.from_dict(part))
    return total
