"""What a pass over a split saw: rows, batches, ids seen per feature, each task's label rate and loss at
initialisation (``validate-data``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recsys_mtl.config import Config
from recsys_mtl.features.batch import Batch
from recsys_mtl.tasks.losses import row_weights
from recsys_mtl.tasks.scale import dwarfing, initial_losses


class SplitSummary:
    """Accumulates over batches; per feature, a bitmap of the buckets seen (bounded by num_embeddings)."""

    def __init__(self, config: Config):
        self.features = {f.name: f for f in config.features.id_features}
        self.seen = {name: np.zeros(f.num_embeddings, dtype=bool) for name, f in self.features.items()}
        self.ids = dict.fromkeys(self.features, 0)
        self.rows = 0
        self.batches = 0
        self.tasks = config.task_specs()
        self.label_sums: dict[str, torch.Tensor] = {}  # task -> [2] (Σ label, rows) over its space
        self.initial_losses: dict[str, torch.Tensor] = {}  # task -> [2] (Σ loss at init, rows)

    def update(self, batch: Batch) -> None:
        w = batch.weights
        self.batches += 1
        self.rows += int(w.sum().item())
        for name, jt in batch.sparse.to_dict().items():
            values = jt.values().numpy()
            self.seen[name][values] = True
            self.ids[name] += len(values)
        for t in self.tasks:
            space = row_weights(t, batch.labels, w, batch.sample_weights)
            total = torch.stack([(batch.labels[t.name] * space).sum(), space.sum()]).double()
            self.label_sums[t.name] = self.label_sums.get(t.name, 0) + total
        for name, total in initial_losses(self.tasks, batch.labels, w, batch.sample_weights).items():
            self.initial_losses[name] = self.initial_losses.get(name, 0) + total

    def loss_at_init(self) -> dict[str, float]:
        """Each task's mean loss at initialisation (all logits 0) over this split."""
        return {k: float(v[0] / max(float(v[1]), 1.0)) for k, v in self.initial_losses.items()}

    def warnings(self) -> list[str]:
        """Label units that would let one task's loss swamp the others' (docs/tasks.md)."""
        warning = dwarfing(self.loss_at_init(), "loss at initialisation", self.tasks)
        return [warning] if warning else []

    def to_dict(self) -> dict[str, Any]:
        rows = max(self.rows, 1)
        # a task's mean label over its space (a where task: its rows only): the positive rate of binary
        # tasks, the mean value of the others
        labels = {task: float(s[0] / max(float(s[1]), 1.0)) for task, s in self.label_sums.items()}
        return {
            "rows": self.rows,
            "batches": self.batches,
            "labels": labels,
            "loss_at_init": self.loss_at_init(),
            "warnings": self.warnings(),
            "features": {
                name: {
                    "buckets_seen": int(self.seen[name].sum()),
                    "num_embeddings": f.num_embeddings,
                    "null_bucket_seen": bool(self.seen[name][0]),
                    "ids_per_row": self.ids[name] / rows,
                }
                for name, f in self.features.items()
            },
        }

