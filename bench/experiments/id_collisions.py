"""Id collisions of ``id_map: hash`` against ``id_map: vocab`` on the generator's data (issue 15, item 3).

For each id feature of a generated dataset, at its configured table size and at smaller ones, and for a
string-id feature with a small vocabulary (``occupation``: 21 names, as in the issue's "21 occupations
land in 16 buckets of 64"): the share of distinct train ids that share their row with another id, the
share of train ids (rows) on such a row, and for ``vocab`` the share of test ids that go to the
reserved row 0 (unseen in training, or cut by the size cap).

    python bench/experiments/id_collisions.py [--rows 200000] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_mtl.config import MultiHotFeature, SparseFeature, load_config
from recsys_mtl.data.synthetic import GeneratorSpec, generate
from recsys_mtl.features.sparse import NULL_BUCKET, map_ids
from recsys_mtl.features.vocab import Vocabularies, flat_ids

OCCUPATIONS = [f"occupation-{i:02d}" for i in range(21)]


def _with_occupation(table: pa.Table, seed: int) -> pa.Table:
    """A string id column drawn from 21 names, skewed like real categorical data."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(OCCUPATIONS) + 1)
    picks = rng.choice(len(OCCUPATIONS), size=table.num_rows, p=p / p.sum())
    return table.append_column("occupation", pa.array(np.array(OCCUPATIONS)[picks]))


def collisions(buckets: np.ndarray, ids: np.ndarray) -> tuple[float, float]:
    """(share of distinct ids sharing their bucket with another id, share of rows whose id does)."""
    distinct, first = np.unique(ids, return_index=True)
    rows_of = buckets[first]
    rows_of = rows_of[rows_of != NULL_BUCKET]
    _, per_bucket = np.unique(rows_of, return_counts=True)
    shared = set(np.unique(rows_of)[per_bucket > 1].tolist())
    on_shared = np.isin(buckets, list(shared)) if shared else np.zeros(len(buckets), bool)
    return float(sum(per_bucket[per_bucket > 1]) / max(len(distinct), 1)), float(on_shared.mean())


def measure(feature: SparseFeature, train: pa.Array, test: pa.Array) -> list[str]:
    ids, _ = flat_ids(train)
    codes = np.unique(ids.to_numpy(zero_copy_only=False), return_inverse=True)[1]  # ids as ints
    hashed, _, _ = map_ids(feature.model_copy(update={"id_map": "hash"}), ids)
    vocab_feature = feature.model_copy(update={"id_map": "vocab"})
    vocab = Vocabularies.compute([vocab_feature], [pa.table({feature.source_column: train})])[feature.name]
    by_vocab = vocab.buckets(ids)
    test_ids, _ = flat_ids(test)
    unseen = float((vocab.buckets(test_ids) == NULL_BUCKET).mean()) if len(test_ids) else 0.0
    h_ids, h_rows = collisions(hashed, codes)
    v_ids, v_rows = collisions(by_vocab, codes)
    train_oov = float((by_vocab == NULL_BUCKET).mean())
    return [
        feature.name, f"{len(np.unique(codes)):,}", f"{feature.num_embeddings:,}",
        f"{len(np.unique(hashed[np.unique(codes, return_index=True)[1]])):,}", f"{h_ids:.1%}", f"{h_rows:.1%}", f"{v_ids:.1%}", f"{v_rows:.1%}", f"{train_oov:.1%}", f"{unseen:.1%}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out, GeneratorSpec(rows=args.rows, seed=args.seed))
        config = load_config(out / "config.yaml")
        train = _with_occupation(pq.read_table(out / "train"), args.seed)
        test = _with_occupation(pq.read_table(out / "test"), args.seed + 1)
    features: list[SparseFeature] = list(config.features.id_features)
    smaller = [f.model_copy(update={"num_embeddings": max(f.num_embeddings // 4, 2)}) for f in features if f.num_embeddings > 100]
    occupation = SparseFeature(name="occupation", num_embeddings=64, dim=8)
    header = ["feature", "distinct train ids", "rows", "hash: rows used", "hash: ids colliding", "hash: train ids on a shared row",
              "vocab: ids colliding", "vocab: train ids on a shared row", "vocab: train ids -> row 0",
              "vocab: test ids -> row 0"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for f in [*features, *smaller, occupation]:
        name = f.name if f in features or f is occupation else f"{f.name} (table / 4)"
        row = measure(f, train.column(f.source_column), test.column(f.source_column))
        row[0] = name + (" (multi-hot)" if isinstance(f, MultiHotFeature) else "")
        lines.append("| " + " | ".join(row) + " |")
    print("\n".join(lines))  # noqa: T201 - a bench script's result


if __name__ == "__main__":
    main()
