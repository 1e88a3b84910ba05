"""recsys-mtl beside DeepCTR-Torch and torch-rechub on the same data and machine (SPEC §8).

One epoch for each arm: DeepCTR-Torch MMOE and ESMM, torch-rechub MMOE and ESMM, and recsys-mtl with the
tasks `[{name: click}, {name: conversion, after: click}]` (an ESMM funnel) on an MMoE and on a
shared-bottom backbone (its ESMM). The same encoded inputs (recsys-mtl's feature path: bucket ids,
transformed dense values), embedding dim 16, experts 4 x (256, 128), towers (64,), the same torch thread
count; each arm in its own process (clean peak memory). The peers train with their own loops and
default optimiser settings; recsys-mtl with its defaults.

Two parts, both on the data sets of ``bench/datasets.py``:

1. accuracy, on the generated data (1M rows: 900k train, 100k test) at batch 512, every arm: test AUC
   of click and of conversion over every impression (clicked and converted: recsys-mtl's
   `conversion.auc`, the peers' CTCVR) beside the oracle's, training samples/s after the first 50
   batches, peak RSS, recsys-mtl's samples/s over each peer's, and model forward p50/p99 for 100 and 500
   candidates (recsys-mtl: the exported model through the serving Scorer);
2. speed, the MMoE arms at each batch size (``--speed-batches``, default 256 512 2048) on the generated
   data and on the small-table data set (the shape of MovieLens-100k: ~1k users, ~1.7k items): samples/s
   of each and recsys-mtl's over the faster peer's.

    pip install --no-deps -r requirements/peers.txt     # optional extra (make bench-peers does both)
    python bench/peers/run.py [--rows 1000000] [--work bench-peers-work] [--arms ...] [--speed-batches 256 512 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: latency.py, datasets.py

from datasets import prepare  # noqa: E402

ARMS = ("deepctr-mmoe", "deepctr-esmm", "rechub-mmoe", "rechub-esmm", "recsys-mtl-mmoe", "recsys-mtl-esmm")
SPEED_ARMS = ("deepctr-mmoe", "rechub-mmoe", "recsys-mtl-mmoe")
BATCH, DIM = 512, 16


def run_arm(arm: str, data: Path, work: Path, threads: int, batch: int) -> dict:
    """In this (child) process: train, predict, time; return the arm's row."""
    torch.set_num_threads(threads)
    from recsys_mtl.config import load_config
    from recsys_mtl.data.source import ParquetSource
    from recsys_mtl.features.dense import DenseStats
    from recsys_mtl.metrics.ranking import auc

    library, kind = arm.rsplit("-", 1)
    started = time.perf_counter()
    if library == "recsys-mtl":
        import recsys_arm

        shutil.rmtree(work / f"recsys-mtl-{kind}", ignore_errors=True)
        shutil.rmtree(work / f"models-{kind}", ignore_errors=True)
        row = recsys_arm.run(kind, data, work, batch)
    else:
        import deepctr_arm
        import rechub_arm
        from inputs import load_split

        config = load_config(data / "config.yaml")
        stats = DenseStats.of_source(config.features.dense, ParquetSource(str(data / "train")))
        train, test = load_split(str(data / "train"), config, stats), load_split(str(data / "test"), config, stats)
        module = deepctr_arm if library == "deepctr" else rechub_arm
        out = module.run(kind, config, train, test, batch, DIM)
        row = {"auc": {"click": auc(out["click"], test.click), "conversion": auc(out["conversion"], test.conversion)},
               "samples_per_s": out["samples_per_s"], "latency": out["latency"]}
    import pyarrow.parquet as pq

    test_table = pq.read_table(data / "test", columns=["click", "conversion", "oracle_click", "oracle_conversion"])
    click = test_table.column("click").to_numpy().astype(float)
    conversion = click * test_table.column("conversion").to_numpy()  # the entire-space funnel label
    row["oracle_auc"] = {"click": auc(test_table.column("oracle_click").to_numpy(), click),
                         "conversion": auc(test_table.column("oracle_conversion").to_numpy(), conversion)}
    row.update(arm=arm, seconds=time.perf_counter() - started, peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


def table(rows: list[dict]) -> str:
    peers = [r for r in rows if not r["arm"].startswith("recsys-mtl")]
    ours = [r for r in rows if r["arm"].startswith("recsys-mtl")]
    lines = [
        f"{'arm':<17} {'click AUC':>9} {'conv. AUC':>9} {'samples/s':>10} {'peak MiB':>9} "
        f"{'fwd100 p50/p99 ms':>18} {'fwd500 p50/p99 ms':>18}" + "".join(f" {'vs ' + p['arm']:>17}" for p in peers),
    ]
    for r in rows:
        lat = {int(k): v for k, v in r["latency"].items()}
        line = (
            f"{r['arm']:<17} {r['auc']['click']:>9.4f} {r['auc']['conversion']:>9.4f} {r['samples_per_s']:>10,.0f} "
            f"{r['peak_rss_mib']:>9,.0f} {lat[100][0]:>8.2f}/{lat[100][1]:<8.2f} {lat[500][0]:>9.2f}/{lat[500][1]:<8.2f}"
        )
        if r in ours:
            line += "".join(f" {r['samples_per_s'] / p['samples_per_s']:>16.2f}x" for p in peers)
        lines.append(line)
    oracle = rows[0]["oracle_auc"]
    lines.append(f"{'oracle':<17} {oracle['click']:>9.4f} {oracle['conversion']:>9.4f}")
    return "\n".join(lines)


def speed_table(grid: dict[tuple[str, int], dict[str, dict]]) -> str:
    """Markdown: per (data set, batch) each MMoE arm's samples/s and recsys-mtl's over the faster peer's;
    then each arm's forward p50 at 100 and 500 candidates (the same model whatever the batch: the runs of
    each data set's first batch size)."""
    lines = ["| data | batch | recsys-mtl | DeepCTR-Torch MMOE | torch-rechub MMOE | ratio to the faster peer |",
             "|---|---:|---:|---:|---:|---:|"]
    for (data, batch), rows in grid.items():
        rate = {arm: row["samples_per_s"] for arm, row in rows.items()}
        ours, peers = rate["recsys-mtl-mmoe"], [rate[a] for a in SPEED_ARMS if not a.startswith("recsys")]
        lines.append(f"| {data} | {batch} | {ours:,.0f} | {peers[0]:,.0f} | {peers[1]:,.0f} | {ours / max(peers):.2f}x |")
    lines += ["", "| data | candidates | recsys-mtl p50 ms | DeepCTR-Torch p50 ms | torch-rechub p50 ms |", "|---|---:|---:|---:|---:|"]
    for data in dict.fromkeys(d for d, _ in grid):
        rows = next(r for (d, _), r in grid.items() if d == data)
        for n in (100, 500):
            p50 = [{int(k): v for k, v in rows[a]["latency"].items()}[n][0] for a in ("recsys-mtl-mmoe", *SPEED_ARMS[:2])]
            lines.append(f"| {data} | {n} | {p50[0]:.2f} | {p50[1]:.2f} | {p50[2]:.2f} |")
    return "\n".join(lines)


def spawn(arm: str, data: str, rows: int, batch: int, args: argparse.Namespace) -> dict:
    """Run one arm in its own process; its row."""
    subprocess.run([sys.executable, __file__, "--arm", arm, "--data", data, "--rows", str(rows), "--batch", str(batch),
                    "--work", str(args.work), "--threads", str(args.threads)], check=True)
    return json.loads((args.work / f"{arm}.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated data set")
    parser.add_argument("--work", type=Path, default=Path("bench-peers-work"))
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS, help="arms of the accuracy table (none: skip it)")
    parser.add_argument("--speed-batches", type=int, nargs="*", default=[256, 512, 2048], help="batch sizes of the speed table")
    parser.add_argument("--speed-data", nargs="*", default=["synthetic", "small"], choices=["synthetic", "small"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of every arm")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm in this process
    parser.add_argument("--data", default="synthetic", help=argparse.SUPPRESS)  # internal, with --arm
    parser.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)  # internal, with --arm
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.arm:
        data = prepare(args.data, args.work, args.rows if args.data == "synthetic" else None)
        result = run_arm(args.arm, data, args.work, args.threads, args.batch)
        (args.work / f"{args.arm}.json").write_text(json.dumps(result, default=float))
        return
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} threads; generated data {args.rows:,} rows; one epoch per arm")
    rows = []
    for arm in args.arms:
        print(f"running {arm} (synthetic, batch {BATCH}) ...", flush=True)
        rows.append(spawn(arm, "synthetic", args.rows, BATCH, args))
        print(f"  done in {rows[-1]['seconds']:.0f} s", flush=True)
    if rows:
        print(table(rows))
    grid: dict[tuple[str, int], dict[str, dict]] = {}
    for data in args.speed_data:
        for batch in args.speed_batches:
            for arm in SPEED_ARMS:
                print(f"running {arm} ({data}, batch {batch}) ...", flush=True)
                grid.setdefault((data, batch), {})[arm] = spawn(arm, data, args.rows, batch, args)
    if grid:
        print(speed_table(grid))
    (args.work / "results.json").write_text(json.dumps({"accuracy": rows, "speed": [
        {"data": d, "batch": b, "arms": r} for (d, b), r in grid.items()]}, indent=1, default=float))


if __name__ == "__main__":
    main()
