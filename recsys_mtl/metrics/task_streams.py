"""The streaming metric set of every task (what ``recsys-mtl evaluate`` reports), mergeable over ranks.

Views per task kind (each a stream of one score against one label; the oracle's score beside it when
the data has oracle columns):

* ``ctr``: pCTR vs click, plus GAUC over ``group_ids``;
* ``ctcvr`` / ``cvr``: pCTCVR vs click∧conversion (when both towers exist; GAUC too), and pCVR on
  clicked rows (``cvr_*_clicked``), over the entire space (``cvr_*_entire_space``) and, with an oracle,
  against the oracle p(convert | click) on every impression (``cvr_auc_counterfactual``);
* ``watch_time``: predicted seconds vs watch time (RMSE, MAE, XAUC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from recsys_mtl.metrics.streaming import BinaryStream, GroupStream, RegressionStream
from recsys_mtl.tasks.heads import TaskSpec


@dataclass
class _View:
    task: str
    curve: str  # name of its curves in the report ("" for none)
    prefix: str  # metric name = prefix + metric + suffix
    suffix: str
    score: str  # column of the model's score
    label: str  # label column (or the product of click and conversion: "click*conversion")
    weight: str | None  # extra row weight column (clicked rows only: label_click)
    regression: bool = False


def _views(tasks: list[TaskSpec], columns: set[str]) -> list[_View]:
    out = []
    for t in tasks:
        if t.kind == "ctr":
            out.append(_View(t.name, "ctr", "", "", "pctr", "label_click", None))
        elif t.kind in ("ctcvr", "cvr"):
            if "pctcvr" in columns:
                out.append(_View(t.name, "ctcvr", "", "", "pctcvr", "click*conversion", None))
            out.append(_View(t.name, "cvr_clicked", "cvr_", "_clicked", "pcvr", "label_conversion", "label_click"))
            out.append(_View(t.name, "cvr_entire_space", "cvr_", "_entire_space", "pcvr", "click*conversion", None))
            if "oracle_pcvr" in columns:
                out.append(_View(t.name, "", "cvr_", "_counterfactual", "pcvr", "oracle_pcvr", None))
        else:
            out.append(_View(t.name, "watch_time", "", "", "watch_time", "label_watch_time", None, regression=True))
    return out


def _label(cols: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name == "click*conversion":
        return cols["label_click"] * cols["label_conversion"]
    return cols[name]


class TaskStreams:
    """Accumulates every view of every task (and the oracle's, when its columns are present)."""

    def __init__(self, tasks: list[TaskSpec], columns: set[str], groups: bool, max_group_rows: int = 50_000_000):
        self.tasks = tasks
        self.views = _views(tasks, columns)
        self.oracle = {v.score: f"oracle_{v.score}" for v in self.views if f"oracle_{v.score}" in columns}
        self.streams = {
            (who, i): RegressionStream() if v.regression else BinaryStream()
            for i, v in enumerate(self.views) for who in ("model", "oracle") if who == "model" or v.score in self.oracle
        }
        # GAUC of the headline score of ranking tasks
        self.groups = {
            (who, i): GroupStream(max_group_rows)
            for i, v in enumerate(self.views) if groups and v.curve in ("ctr", "ctcvr")
            for who in ("model", "oracle") if who == "model" or v.score in self.oracle
        }

    def update(self, cols: dict[str, np.ndarray], group_ids: np.ndarray) -> None:
        """One batch: ``cols`` as ``train.evaluate.batch_columns`` makes them (numpy), padding rows
        carrying weight 0."""
        weight = cols["weight"]
        for (who, i), stream in self.streams.items():
            v = self.views[i]
            score = cols[v.score if who == "model" else self.oracle[v.score]]
            w = weight if v.weight is None else weight * cols[v.weight]
            stream.update(score, _label(cols, v.label), w)
            if (who, i) in self.groups:
                self.groups[(who, i)].update(score, _label(cols, v.label), group_ids, w)

    def all_reduce(self) -> None:
        """Sum the histogram states over ranks (every rank ends with the totals) and gather the GAUC
        rows on rank 0."""
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
        out: dict[str, dict[str, float]] = {t.name: {} for t in self.tasks}
        for (who, i), stream in self.streams.items():
            v = self.views[i]
            values = dict(stream.metrics())
            if (who, i) in self.groups:
                values.update(self.groups[(who, i)].metrics())
            if v.suffix in ("_entire_space", "_counterfactual"):
                # pCVR against click∧conversion (or soft labels): only its ranking is meaningful; its
                # log loss or calibration would measure pCVR against a label it does not predict
                values = {k: values[k] for k in ("auc",) if k in values}
            for name, value in values.items():
                key = f"{v.prefix}{name}{v.suffix}"
                if who == "oracle":
                    if name.startswith("gauc_") and name != "gauc":
                        continue  # group counts are the model's
                    key = f"oracle_{key}"
                out[v.task][key] = value
        return out

    def curves(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for (who, i), stream in self.streams.items():
            v = self.views[i]
            if not v.curve:
                continue
            curves = stream.curves()
            entry = out.setdefault(v.curve, {"task": v.task})
            if who == "model":
                entry.update(curves)
            elif "roc" in curves:
                entry["oracle_roc"] = curves["roc"]
        return out
