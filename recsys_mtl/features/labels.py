"""Label checks (SPEC §2): rows whose labels are impossible are counted per reason, then dropped or
rejected. Reasons are stable strings; they appear in the training log and the report."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from recsys_mtl.features.dense import raw_values


def read_labels(table: pa.Table, columns: dict[str, str]) -> dict[str, np.ndarray]:
    """``{role: [N] float64}``; nulls become NaN."""
    return {role: raw_values(table.column(col))[0] for role, col in columns.items()}


def bad_label_rows(labels: dict[str, np.ndarray]) -> tuple[np.ndarray, Counter]:
    """Mask of rows with impossible labels and the count per reason. ``{role: [N]} -> ([N] bool, Counter)``.

    click / conversion must be 0 or 1 (not null); conversion needs a click; watch time must be a
    finite, non-negative number.
    """
    n = len(next(iter(labels.values())))
    bad = np.zeros(n, dtype=bool)
    reasons: Counter = Counter()

    def flag(reason: str, mask: np.ndarray) -> None:
        count = int(mask.sum())
        if count:
            reasons[reason] += count
            bad[:] |= mask

    for role in ("click", "conversion"):
        if role in labels:
            y = labels[role]
            flag(f"{role}_missing", np.isnan(y))
            flag(f"{role}_not_0_or_1", ~np.isnan(y) & (y != 0) & (y != 1))
    if "click" in labels and "conversion" in labels:
        flag("conversion_without_click", (labels["conversion"] == 1) & (labels["click"] == 0))
    if "watch_time" in labels:
        t = labels["watch_time"]
        flag("watch_time_missing_or_not_finite", ~np.isfinite(t))
        flag("watch_time_negative", np.isfinite(t) & (t < 0))
    return bad, reasons
