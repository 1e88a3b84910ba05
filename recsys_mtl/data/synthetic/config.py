"""The generated dataset's feature config (config.yaml) and its Parquet schema."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from recsys_mtl.data.synthetic.catalogue import CATALOGUE, CLASSIC
from recsys_mtl.data.synthetic.latent import NUM_AGE_BUCKETS, NUM_DEVICES, NUM_HOURS
from recsys_mtl.data.synthetic.spec import GeneratorSpec

EMBEDDING_DIM = 16


def feature_config(spec: GeneratorSpec) -> dict:
    """The feature-config dict for a dataset generated with `spec` (written to out_dir/config.yaml).

    `tasks:` has one entry per objective (docs/tasks.md): after-click binaries as funnel stages
    (`after: click`), watch_time as a weighted logistic task; `ranking:` is the product of the task
    outputs with exponent 1 for click and 0.5 for the rest.

    Data paths are relative to the config file. The generated ids are dense (0..cardinality-1), so
    every feature uses ``id_map: identity`` with cardinality + 1 buckets (bucket 0 is reserved for
    null): no hash collisions, one embedding row per id. The user and item tables cover the ids of
    every day of a multi-day run, so every day's config is the same (a model warm-starts without
    resizing).
    """
    sparse_cardinalities = {
        "user_id": spec.total_users,
        "item_id": spec.total_items,
        "item_category": spec.num_categories,
        "item_brand": spec.num_brands,
        "user_city": spec.num_cities,
        "user_age": NUM_AGE_BUCKETS,
        "device": NUM_DEVICES,
        "hour": NUM_HOURS,
    }
    sides = {
        "user_id": "user", "user_city": "user", "user_age": "user", "hist_categories": "user",
        "user_activity": "user", "device": "context", "hour": "context",
    }  # the rest describe the item

    def served(name: str) -> dict:
        return {"side": sides.get(name, "item"), **({"required": True} if name == "item_id" else {})}

    return {
        # tuned on 1M generated rows, 2 ranks, one epoch: smaller batches (more steps) and a higher dense
        # LR beat the library defaults (batch 4096, LR 2e-3), which suit much larger logs
        "data": {"train": "train", "eval": "test", "batch_size": 512},
        "features": {
            "sparse": [
                {
                    "name": name,
                    "num_embeddings": int(card) + 1,
                    "dim": EMBEDDING_DIM,
                    "id_map": "identity",
                    **served(name),
                }
                for name, card in sparse_cardinalities.items()
            ],
            "multi_hot": [
                {
                    "name": "hist_categories",
                    "num_embeddings": int(spec.num_categories) + 1,
                    "dim": EMBEDDING_DIM,
                    "id_map": "identity",
                    "pooling": "mean",
                    "max_length": max(int(spec.max_hist_len), 1),
                    **served("hist_categories"),
                }
            ],
            "dense": [
                {"name": "price", "transform": "log1p", **served("price")},
                {"name": "item_ctr_7d", "transform": "standardize", **served("item_ctr_7d")},
                {"name": "user_activity", "transform": "log1p", **served("user_activity")},
            ],
        },
        "tasks": [_task(name) for name in spec.objectives],
        "ranking": {
            "combine": "product",
            "terms": {name: 1.0 if name == "click" else 0.5 for name in spec.objectives},
        },
        "group_key": "user_id",
        "train": {"dense_lr": 0.005},
    }


def output_schema(with_oracle: bool, objectives: Sequence[str] = CLASSIC) -> pa.Schema:
    """Arrow schema of a part file: features, then one label column per objective (int8 0/1 for
    binaries, float32 seconds for watch_time); the test split (`with_oracle=True`) adds the float32
    `oracle_columns(objectives)`."""
    fields = [
        ("row_id", pa.int64()),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("item_category", pa.int64()),
        ("item_brand", pa.int64()),
        ("user_city", pa.int64()),
        ("user_age", pa.int64()),
        ("device", pa.int64()),
        ("hour", pa.int64()),
        ("hist_categories", pa.list_(pa.int64())),
        ("price", pa.float32()),
        ("item_ctr_7d", pa.float32()),
        ("user_activity", pa.float32()),
    ]
    fields += [(name, label_type(name)) for name in objectives]
    if with_oracle:
        fields += [(name, pa.float32()) for name in oracle_columns(objectives)]
    return pa.schema(fields)


def oracle_columns(objectives: Sequence[str]) -> list[str]:
    """Names of the test split's oracle columns, in file order: per objective ``oracle_<name>``, then
    ``oracle_<name>_given_click`` for the objectives that need a click."""
    names = []
    for name in objectives:
        names.append(f"oracle_{name}")
        if CATALOGUE[name].needs_click:
            names.append(f"oracle_{name}_given_click")
    return names


def _task(name: str) -> dict:
    """The `tasks:` entry of objective `name` (docs/tasks.md)."""
    obj = CATALOGUE[name]
    if obj.kind == "watch_time":
        return {"name": name, "type": "weighted_logistic"}
    return {"name": name, **({"after": obj.after} if obj.after else {})}


def label_type(name: str) -> pa.DataType:
    """Arrow type of objective `name`'s label column: float32 seconds (watch_time) or int8 0/1."""
    return pa.float32() if CATALOGUE[name].kind == "watch_time" else pa.int8()
