"""Labels checked before anything is trained (SPEC §2, docs/tasks.md): one columnar pass over a split's
label and sample-weight columns, through the same ``check_labels`` the reader drops rows with.

A label column mapped by mistake shows up here, not after an epoch: every row dropped as impossible
(a conversion column that is not 0/1, a funnel stage without its parent), or a task whose label has a
single value on the rows its loss sees (AUC undefined, nothing to learn). ``validate-data`` and
``train`` both refuse such data with ``DataError`` (exit 2) naming the task, its column and the counts.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from recsys_mtl.config import Config
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.errors import DataError
from recsys_mtl.features.columns import column_rules
from recsys_mtl.features.labels import check_labels, read_labels, read_sample_weights
from recsys_mtl.tasks.graph import TaskSpec
from recsys_mtl.tasks.losses import row_weights

log = logging.getLogger(__name__)


@dataclass
class LabelCheck:
    """What the labels of a split hold. ``observed``: rows in each task's loss space (kept rows, ``where``
    space, positive sample weight); ``low`` / ``high``: the smallest and largest label on those rows."""

    tasks: list[TaskSpec]
    rows_read: int = 0
    rows_dropped: int = 0
    reasons: Counter = field(default_factory=Counter)
    observed: Counter = field(default_factory=Counter)
    low: dict[str, float] = field(default_factory=dict)
    high: dict[str, float] = field(default_factory=dict)

    def add(self, table: pa.Table) -> None:
        """Count one table (rows of any number; only the label and weight columns are read)."""
        sample_weights = read_sample_weights(table, self.tasks)
        bad, reasons, labels = check_labels(self.tasks, read_labels(table, self.tasks), sample_weights)
        self.rows_read += table.num_rows
        self.rows_dropped += int(bad.sum())
        self.reasons.update(reasons)
        keep = ~bad
        as_tensor = {k: torch.from_numpy(v[keep]) for k, v in labels.items()}
        weights = {k: torch.from_numpy(np.nan_to_num(v[keep])) for k, v in sample_weights.items()}
        ones = torch.ones(int(keep.sum()), dtype=torch.float64)
        for t in self.tasks:
            seen = row_weights(t, as_tensor, ones, weights).numpy() > 0  # the rows the task's loss sees
            y = as_tensor[t.name].numpy()[seen]
            if len(y):
                self.observed[t.name] += len(y)
                self.low[t.name] = min(self.low.get(t.name, np.inf), float(y.min()))
                self.high[t.name] = max(self.high.get(t.name, -np.inf), float(y.max()))

    def dropped_problem(self, max_dropped_share: float) -> str | None:
        """Why too many rows would be dropped as impossible (more than ``max_dropped_share``), or None."""
        share = self.rows_dropped / max(self.rows_read, 1)
        if not self.rows_dropped or share <= max_dropped_share:
            return None
        top = ", ".join(f"{reason} {count:,}" for reason, count in self.reasons.most_common(4))
        return (
            f"{self.rows_dropped:,} of {self.rows_read:,} rows ({share:.1%}) have impossible labels and would be "
            f"dropped ({top}); data.max_dropped_share={max_dropped_share:g}. Check each task's label column, "
            "type, after and where (docs/tasks.md), or raise data.max_dropped_share"
        )

    def class_problems(self) -> list[str]:
        """The tasks with nothing to learn: no usable row, or a single label value on their rows."""
        found = []
        for t in self.tasks:
            column = f"task {t.name} (label column {t.label!r})"
            if not self.observed[t.name]:
                where = f" (its where task {t.where!r} is never positive)" if t.where else ""
                found.append(f"{column} has no usable row{where}: nothing to learn")
            elif self.low[t.name] == self.high[t.name]:
                value, rows = self.low[t.name], self.observed[t.name]
                what = "a single class" if t.is_binary else "a constant"
                found.append(
                    f"{column} is {value:g} on all {rows:,} rows its loss sees: {what}, so there is nothing to learn "
                    "and its AUC is undefined. Check the column mapped to the task"
                )
        return found

    def problems(self, max_dropped_share: float) -> list[str]:
        """Every reason this split cannot train a model (empty: it can)."""
        dropped = self.dropped_problem(max_dropped_share)
        return ([dropped] if dropped else []) + self.class_problems()


def check_split_labels(tasks: list[TaskSpec], source: ParquetSource) -> LabelCheck:
    """One pass over ``source`` reading only the label and weight columns."""
    columns = sorted({t.label for t in tasks} | {t.weight_column for t in tasks if t.weight_column})
    check = LabelCheck(tasks)
    for table in source.iter_tables(columns):
        check.add(table)
    return check


def allowed_drop_share(config: Config) -> float:
    """``data.max_dropped_share``, or 0 with ``data.bad_rows: reject`` (any impossible row fails)."""
    return 0.0 if config.data.bad_rows == "reject" else config.data.max_dropped_share


def split_label_problems(config: Config, split: str) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` of the ``split`` ("train" / "eval") labels, each naming the split. Too many
    impossible rows is an error in either split; a task with nothing to learn is an error in the train
    split and a warning in the eval split (a small eval split may hold no positive of a rare task: its
    metrics are NaN, which a gate rule on them refuses)."""
    path = config.data.train if split == "train" else config.data.eval
    source = ParquetSource(path)
    source.check(column_rules(config, with_labels=True))  # a missing or mistyped column: named, not a pyarrow error
    check = check_split_labels(config.task_specs(), source)
    dropped, classes = check.dropped_problem(allowed_drop_share(config)), check.class_problems()
    errors = ([dropped] if dropped else []) + (classes if split == "train" else [])
    warnings = classes if split != "train" else []
    return [f"{split} split: {e}" for e in errors], [f"{split} split: {w}; its metrics will be NaN" for w in warnings]


def require_trainable_labels(config: Config, splits: list[str]) -> None:
    """Log every warning of the ``splits``' labels, then ``DataError`` listing every error, if any."""
    problems = []
    for split in splits:
        errors, warnings = split_label_problems(config, split)
        problems += errors
        for warning in warnings:
            log.warning("%s", warning)
    if problems:
        raise DataError("the data cannot train a model:\n  - " + "\n  - ".join(problems))
