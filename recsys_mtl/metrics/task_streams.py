"""The streaming metric set of every task (SPEC §5, docs/tasks.md), mergeable over ranks: what training's
evaluation and ``recsys-mtl evaluate`` report, through one path.

Each task is seen through views, a view being one output streamed against one label on a set of rows:

* every task: ``<task>`` against its label on its space (all rows; a ``where`` task's rows where that
  task's label is 1): binary metrics (and GAUC with a group key), or RMSE / MAE / XAUC;
* a funnel stage also ``<task>_given_<after>`` on its parent's positive rows (``conditional_*``);
* a conditional output (a funnel stage's ``<task>_given_<after>``, a ``where`` task's ``<task>``) also
  ranked against the task's label on every row (``*_auc_entire_space``: ESMM's comparison of pCVR
  models over all impressions) and, with a conditional oracle column, against the true conditional
  probability on every row (``*_auc_counterfactual``): the space it is served on, where click-only
  training is biased.

Oracle columns are named by label: ``oracle_<label>`` (the true E[label] per row) and
``oracle_<label>_given_<parent label>``; beside each view the oracle's score gives ``oracle_<metric>``.

A view in which any row (of positive weight) had a NaN or infinite score has every metric NaN and
reports how many rows did as ``nonfinite_predictions`` (named like its other metrics:
``conditional_nonfinite_predictions``, ``nonfinite_predictions_entire_space``, ...). The count is part
of each stream's summed state, so it covers every rank's rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from recsys_mtl.metrics.streaming import NONFINITE, BinaryStream, GroupStream, RegressionStream
from recsys_mtl.tasks.graph import TaskSpec, by_name


@dataclass(frozen=True)
class _View:
    task: str
    curve: str  # its curves' name in the report ("" for none)
    prefix: str  # metric name = prefix + metric + suffix
    suffix: str
    score: str  # column of the model's score
    label: str  # label column (or a soft-label oracle column)
    space: str | None  # 0/1 column restricting the rows (a parent's or where task's label)
    oracle: str | None  # the oracle's score column, when the data has it
    regression: bool = False
    groups: bool = False


def label_column(task: str) -> str:
    """The evaluation column holding ``task``'s label."""
    return f"label_{task}"


def _views(tasks: list[TaskSpec], columns: set[str], groups: bool) -> list[_View]:
    index = by_name(tasks)
    out = []

    def oracle(name: str) -> str | None:
        return name if name in columns else None

    for t in tasks:
        label = label_column(t.name)
        if t.where is not None:
            cond = oracle(f"oracle_{t.label}_given_{index[t.where].label}")
            space = label_column(t.where)
            out.append(_View(t.name, t.name, "", "", t.name, label, space, cond, not t.is_binary, groups and t.is_binary))
            if t.is_binary:
                out.append(_View(t.name, "", "", "_entire_space", t.name, label, None, cond))
                if cond is not None:
                    out.append(_View(t.name, "", "", "_counterfactual", t.name, cond, None, cond))
            continue
        out.append(_View(t.name, t.name, "", "", t.name, label, None, oracle(f"oracle_{t.label}"), not t.is_binary, groups and t.is_binary))
        if t.after is not None:
            cond = oracle(f"oracle_{t.label}_given_{index[t.after].label}")
            out.append(_View(t.name, t.conditional_output, "conditional_", "", t.conditional_output, label, label_column(t.after), cond))
            out.append(_View(t.name, "", "conditional_", "_entire_space", t.conditional_output, label, None, cond))
            if cond is not None:
                out.append(_View(t.name, "", "conditional_", "_counterfactual", t.conditional_output, cond, None, cond))
    return out


class TaskStreams:
    """Accumulates every view of every task (and the oracle's, when its columns are present).

    ``max_group_rows`` bounds the rows kept for GAUC over all views together."""

    def __init__(self, tasks: list[TaskSpec], columns: set[str], groups: bool, max_group_rows: int = 50_000_000):
        self.tasks = tasks
        self.views = _views(tasks, columns, groups)
        who = [("model", i) for i in range(len(self.views))] + [("oracle", i) for i, v in enumerate(self.views) if v.oracle]
        self.streams = {(w, i): RegressionStream() if self.views[i].regression else BinaryStream() for w, i in who}
        grouped = [(w, i) for w, i in who if self.views[i].groups]
        self.groups = {k: GroupStream(max(max_group_rows // len(grouped), 1)) for k in grouped}

    def update(self, cols: dict[str, np.ndarray], group_ids: np.ndarray) -> None:
        """One batch: ``cols`` as ``train.evaluate.batch_columns`` makes them (numpy), padding rows
        carrying weight 0."""
        weight = cols["weight"]
        for (who, i), stream in self.streams.items():
            v = self.views[i]
            score = cols[v.score if who == "model" else v.oracle]
            w = weight if v.space is None else weight * cols[v.space]
            stream.update(score, cols[v.label], w)
            if (who, i) in self.groups:
                self.groups[(who, i)].update(score, cols[v.label], group_ids, w)

    def all_reduce(self) -> None:
        """Sum the histogram states over ranks (every rank ends with the totals) and gather the GAUC
        rows on every rank."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return
        keys = list(self.streams)
        states = [self.streams[k].state() for k in keys]
        flat = torch.from_numpy(np.concatenate(states))
        dist.all_reduce(flat)
        offset = 0
        for k, s in zip(keys, states, strict=True):
            self.streams[k].load_state(flat[offset : offset + len(s)].numpy())
            offset += len(s)
        for k, stream in self.groups.items():
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, stream)
            merged = parts[0]
            for other in parts[1:]:
                merged.merge(other)
            self.groups[k] = merged

    def metrics(self) -> dict[str, dict[str, float]]:
        """``{task: {metric: value}}`` with the oracle's as ``oracle_<metric>``; a view with a
        non-finite score: every metric NaN, and ``nonfinite_predictions``."""
        out: dict[str, dict[str, float]] = {t.name: {} for t in self.tasks}
        for (who, i), stream in self.streams.items():
            v = self.views[i]
            values = dict(stream.metrics())
            if (who, i) in self.groups:
                # the row stream's count is the one summed over ranks; the group stream saw the same rows
                values.update({k: x for k, x in self.groups[(who, i)].metrics().items() if k != NONFINITE})
            if values.get(NONFINITE):
                values = {k: x if k == NONFINITE else math.nan for k, x in values.items()}
            if v.suffix in ("_counterfactual", "_entire_space"):
                # a conditional output against soft labels, or against its label on rows outside its
                # space: only the ranking is meaningful; log loss or calibration would measure it
                # against a label it does not predict
                values = {k: values[k] for k in ("auc", NONFINITE) if k in values}
            for name, value in values.items():
                key = f"{v.prefix}{name}{v.suffix}"
                if who == "oracle":
                    if name.startswith("gauc_") and name != "gauc":
                        continue  # group counts are the model's
                    key = f"oracle_{key}"
                out[v.task][key] = value
        return out

    def curves(self) -> dict[str, dict[str, Any]]:
        """``{curve: {"task", "kind": binary|regression, <curve data>..., "oracle_roc"?}}``, one per
        output view (``<task>``, ``<task>_given_<after>``)."""
        out: dict[str, dict[str, Any]] = {}
        for (who, i), stream in self.streams.items():
            v = self.views[i]
            if not v.curve:
                continue
            curves = stream.curves()
            entry = out.setdefault(v.curve, {"task": v.task, "kind": "regression" if v.regression else "binary"})
            if who == "model":
                entry.update(curves)
            elif "roc" in curves:
                entry["oracle_roc"] = curves["roc"]
        return out
