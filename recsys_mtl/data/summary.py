"""What a pass over a split saw: rows, batches, ids seen per feature, label rates (``validate-data``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys_mtl.config import Config
from recsys_mtl.features.batch import Batch


class SplitSummary:
    """Accumulates over batches; per feature, a bitmap of the buckets seen (bounded by num_embeddings)."""

    def __init__(self, config: Config):
        self.features = {f.name: f for f in config.features.id_features}
        self.seen = {name: np.zeros(f.num_embeddings, dtype=bool) for name, f in self.features.items()}
        self.ids = dict.fromkeys(self.features, 0)
        self.rows = 0
        self.batches = 0
        self.label_sums: dict[str, float] = {}
        self.clicked_sums: dict[str, float] = {}
        self.clicks = 0.0

    def update(self, batch: Batch) -> None:
        w = batch.weights
        self.batches += 1
        self.rows += int(w.sum().item())
        for name, jt in batch.sparse.to_dict().items():
            values = jt.values().numpy()
            self.seen[name][values] = True
            self.ids[name] += len(values)
        click = batch.labels.get("click")
        if click is not None:
            self.clicks += float((click * w).sum())
        for role, y in batch.labels.items():
            self.label_sums[role] = self.label_sums.get(role, 0.0) + float((y * w).sum())
            if click is not None and role != "click":
                self.clicked_sums[role] = self.clicked_sums.get(role, 0.0) + float((y * w * click).sum())

    def to_dict(self) -> dict[str, Any]:
        rows = max(self.rows, 1)
        labels: dict[str, float] = {f"mean_{role}": s / rows for role, s in self.label_sums.items()}
        for role, s in self.clicked_sums.items():
            labels[f"mean_{role}_given_click"] = s / max(self.clicks, 1.0)
        return {
            "rows": self.rows,
            "batches": self.batches,
            "labels": labels,
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

