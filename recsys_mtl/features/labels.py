"""Label checks (SPEC §2, docs/tasks.md): rows whose labels are impossible for a task are counted per
task and reason, then dropped or rejected. Reasons are stable strings (``<task>_<what>``); they appear
in the training log and the report."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from recsys_mtl.features.dense import raw_values
from recsys_mtl.tasks.graph import TaskSpec, topological


def read_labels(table: pa.Table, tasks: list[TaskSpec]) -> dict[str, np.ndarray]:
    """``{task: [N] float64}`` label values; nulls become NaN. Each column is read once."""
    columns: dict[str, np.ndarray] = {}
    for t in tasks:
        if t.label not in columns:
            columns[t.label] = raw_values(table.column(t.label))[0]
    return {t.name: columns[t.label] for t in tasks}


def read_sample_weights(table: pa.Table, tasks: list[TaskSpec]) -> dict[str, np.ndarray]:
    """``{task: [N] float64}`` for the tasks with a ``weight_column``; nulls become NaN."""
    return {t.name: raw_values(table.column(t.weight_column))[0] for t in tasks if t.weight_column}


def check_labels(
    tasks: list[TaskSpec], labels: dict[str, np.ndarray], sample_weights: dict[str, np.ndarray]
) -> tuple[np.ndarray, Counter, dict[str, np.ndarray]]:
    """Rows with impossible labels, the count per reason, and the labels with every null that lies
    outside its task's space read as 0. ``{task: [N]} -> ([N] bool, Counter, {task: [N]})``

    A task's space is the rows where its ``after`` parent and its ``where`` task are positive: a null
    label outside it is no information (nothing was observed there), inside it is ``<task>_missing``.
    Binary labels must be 0/1 and a funnel stage needs its parent (``<task>_without_<after>``);
    regression / weighted-logistic labels must be finite and non-negative; sample weights finite and
    non-negative.
    """
    n = len(next(iter(labels.values())))
    bad = np.zeros(n, dtype=bool)
    reasons: Counter = Counter()
    clean: dict[str, np.ndarray] = {}

    def flag(reason: str, mask: np.ndarray) -> None:
        count = int(mask.sum())
        if count:
            reasons[reason] += count
            bad[:] |= mask

    for t in topological(tasks):  # parents first: their cleaned labels define the children's spaces
        y = labels[t.name]
        space = np.ones(n, dtype=bool)
        for parent in (t.after, t.where):
            if parent is not None:
                space &= clean[parent] == 1
        null = np.isnan(y)
        flag(f"{t.name}_missing", null & space)
        y = np.where(null, 0.0, y)
        if t.is_binary:
            flag(f"{t.name}_not_0_or_1", ~null & (y != 0) & (y != 1))
            if t.after is not None:
                flag(f"{t.name}_without_{t.after}", (y == 1) & (clean[t.after] == 0))
        else:
            flag(f"{t.name}_not_finite", np.isinf(y))
            flag(f"{t.name}_negative", y < 0)
        clean[t.name] = y
        if t.name in sample_weights:
            w = sample_weights[t.name]
            flag(f"{t.name}_bad_weight", ~np.isfinite(w) | (w < 0))
    return bad, reasons, clean
