"""Scoring requests built from rows of a Parquet dataset: the benchmarks, tests and demos score
generated impressions through the HTTP API with them."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from recsys_mtl.config import Config


def request_from_rows(rows: pa.Table, config: Config, request_id: str | None = None) -> dict[str, Any]:
    """One request scoring every row as a candidate: features with ``side: user`` / ``context`` are
    taken from the first row, at request level (the rows are one user's candidates); the rest are
    given per candidate."""
    features = (*config.features.id_features, *config.features.dense)
    shared = {"user": {}, "context": {}}
    first = rows.slice(0, 1).to_pylist()[0]
    for f in features:
        if f.side in shared:
            shared[f.side][f.name] = first[f.source_column]
    per_candidate = [f for f in features if f.side not in shared]
    columns = {f.name: rows.column(f.source_column).to_pylist() for f in per_candidate}
    candidates = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    request: dict[str, Any] = {**shared, "candidates": candidates}
    if request_id is not None:
        request["request_id"] = request_id
    return request
