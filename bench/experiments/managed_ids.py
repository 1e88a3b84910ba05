"""``id_map: hash`` vs ``vocab`` vs ``managed`` user and item ids on churning ids (issue 15, item 4).

The generator's day stream (`recsys-mtl generate --days`: new users and items every day, item
popularity drifting) with user_id and item_id tables smaller than the ids they meet (``--user-rows``,
``--item-rows``), trained day by day, each day warm-started from the previous day's run (day 1 from
scratch), and evaluated on the next day's test split. Per arm and day: click AUC, conversion AUC, the
wall time of `recsys-mtl train`, and where the next day's test rows' user and item ids land: on a row
of their own, on a row shared with another id seen so far (a collision: hashing), or on the unknown
row (vocab: row 0, not in the day's vocabulary; managed: the miss row, not admitted or evicted).

    python bench/experiments/managed_ids.py [--rows 200000] [--days 3] [--user-rows 16384] [--item-rows 8192]

One process per run, a small model (`model.hidden_dims=[64,32]`), one epoch. Prints a Markdown table
and writes the results to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.experiments.daily_stream import cli
from recsys_mtl.features.sparse import NULL_BUCKET, map_ids
from recsys_mtl.models.managed import FREE
from recsys_mtl.train.run_dir import LoadedRun, load_run

OVERRIDES = ["model.hidden_dims=[64,32]", "train.epochs=1"]
ARMS = ("hash", "vocab", "managed")
IDS = ("user_id", "item_id")


def arm_overrides(arm: str, rows: dict[str, int]) -> list[str]:
    """The day's config with user_id and item_id (sparse features 0 and 1) mapped by ``arm``."""
    out = []
    for index, name in enumerate(IDS):
        out += [f"features.sparse.{index}.id_map={arm}", f"features.sparse.{index}.num_embeddings={rows[name]}"]
    return out


def placement(loaded: LoadedRun, arm: str, name: str, seen: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Shares of the ``test`` rows' ids (of feature ``name``) on a row of their own, on a row shared
    with another id of ``seen`` (the ids trained on so far) or the test, and on the unknown row."""
    feature = next(f for f in loaded.config.features.id_features if f.name == name)
    if arm == "managed":
        module = loaded.module.model.managed._managed_collision_collection._managed_collision_modules[feature.table_name]
        hashed, _, _ = map_ids(feature, pa.array(test))
        held = module._mch_sorted_raw_ids
        unknown = ~np.isin(hashed, held[held != FREE].numpy())
        return {"own": float(1 - unknown.mean()), "shared": 0.0, "unknown": float(unknown.mean())}
    vocab = loaded.vocabs[name] if arm == "vocab" else None
    rows, _, _ = map_ids(feature, pa.array(test), vocab)
    everyone = np.unique(np.concatenate([seen, test]))
    their_rows, _, _ = map_ids(feature, pa.array(everyone), vocab)
    known = their_rows != NULL_BUCKET
    buckets, counts = np.unique(their_rows[known], return_counts=True)
    shared_rows = buckets[counts > 1]
    unknown = rows == NULL_BUCKET
    shared = np.isin(rows, shared_rows) & ~unknown
    return {"own": float((~unknown & ~shared).mean()), "shared": float(shared.mean()), "unknown": float(unknown.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows generated per day")
    parser.add_argument("--days", type=int, default=3, help="days trained (one more is generated for evaluation)")
    parser.add_argument("--user-rows", type=int, default=16_384)
    parser.add_argument("--item-rows", type=int, default=8_192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep data and runs here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("managed_ids.json"), help="results (JSON)")
    args = parser.parse_args()
    rows = {"user_id": args.user_rows, "item_id": args.item_rows}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        data, runs = work / "data", work / "runs"
        if not (data / f"day_{args.days + 1}" / "config.yaml").is_file():
            cli("generate", "--out", str(data), "--rows", str(args.rows), "--days", str(args.days + 1), "--seed", str(args.seed))
        seen = {name: [] for name in IDS}
        for day in range(1, args.days + 1):
            train, test = data / f"day_{day}" / "train", data / f"day_{day + 1}" / "test"
            for name in IDS:
                seen[name].append(pq.read_table(train, columns=[name]).column(name).to_numpy())
            test_ids = {name: pq.read_table(test, columns=[name]).column(name).to_numpy() for name in IDS}
            for arm in ARMS:
                out = runs / f"{arm}_day{day}"
                init = ["--init-from", str(runs / f"{arm}_day{day - 1}")] if day > 1 else []
                if not (out / "metrics.json").exists():
                    seconds = cli("train", "--config", str(data / f"day_{day}" / "config.yaml"), "--out", str(out), "--nproc", "1",
                                  *init, f"data.eval={test}", *OVERRIDES, *arm_overrides(arm, rows))
                    (out / "wall_seconds").write_text(f"{seconds:.3f}\n")
                metrics = json.loads((out / "metrics.json").read_text())["metrics"]
                result = {"arm": arm, "day": day, "click auc": metrics["click"]["auc"], "conversion auc": metrics["conversion"]["auc"],
                          "seconds": float((out / "wall_seconds").read_text())}
                loaded = load_run(out)  # once per run: both id features are read from it
                for name in IDS:
                    for where, share in placement(loaded, arm, name, np.concatenate(seen[name]), test_ids[name]).items():
                        result[f"{name} {where}"] = share
                results.append(result)
                print(f"day {day} {arm}: {result}", file=sys.stderr, flush=True)
    header = ["day", "ids", "click AUC", "conversion AUC", *(f"{n}: own / shared / unknown row" for n in IDS), "train wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        places = [" / ".join(f"{r[f'{n} {w}']:.1%}" for w in ("own", "shared", "unknown")) for n in IDS]
        lines.append("| " + " | ".join([str(r["day"]), r["arm"], f"{r['click auc']:.4f}", f"{r['conversion auc']:.4f}", *places,
                                        f"{r['seconds']:.1f}"]) + " |")
    print("\n".join(lines))
    args.out.write_text(json.dumps({"rows_per_day": args.rows, "days": args.days, "seed": args.seed, "table_rows": rows,
                                    "overrides": OVERRIDES, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
