"""recsys-mtl beside DeepCTR-Torch and torch-rechub on the same data and machine (SPEC §8).

One epoch on the generated dataset (1M rows: 900k train, 100k test) for each arm: DeepCTR-Torch MMOE
and ESMM, torch-rechub MMOE and ESMM, and recsys-mtl with the tasks `[{name: click}, {name: conversion,
after: click}]` (an ESMM funnel) on an MMoE and on a shared-bottom backbone (its ESMM). The same
encoded inputs (recsys-mtl's feature path: bucket ids, transformed dense values), embedding dim 16,
experts 4 x (256, 128), towers (64,), batch 512, the same torch thread count; each arm in its own
process (clean peak memory). The peers train with their own loops and default optimiser settings;
recsys-mtl with its defaults. Printed: test AUC of click and of conversion over every impression
(clicked and converted: recsys-mtl's `conversion.auc`, the peers' CTCVR) beside the oracle's
(`oracle_click`, `oracle_conversion`), training samples/s after the first 50 batches, peak RSS,
recsys-mtl's samples/s over each peer's, and model forward p50/p99 for 100 and 500 candidates
(recsys-mtl: the exported model through the serving Scorer).

    pip install --no-deps -r requirements/peers.txt     # optional extra (make bench-peers does both)
    python bench/peers/run.py [--rows 1000000] [--work bench-peers-work] [--arms ...]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: latency.py, shared with serve_latency.py

ARMS = ("deepctr-mmoe", "deepctr-esmm", "rechub-mmoe", "rechub-esmm", "recsys-mtl-mmoe", "recsys-mtl-esmm")
BATCH, DIM = 512, 16


def prepare(work: Path, rows: int) -> Path:
    from recsys_mtl.data.synthetic import GeneratorSpec, generate

    data = work / f"classic-{rows}"  # the task-list era's columns (oracle_click, ...), not an older data-{rows}
    if not (data / "config.yaml").is_file():
        generate(data, GeneratorSpec(rows=rows))
    return data


def run_arm(arm: str, data: Path, work: Path, threads: int) -> dict:
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
        row = recsys_arm.run(kind, data, work, BATCH)
    else:
        import deepctr_arm
        import rechub_arm
        from inputs import load_split

        config = load_config(data / "config.yaml")
        stats = DenseStats.of_source(config.features.dense, ParquetSource(str(data / "train")))
        train, test = load_split(str(data / "train"), config, stats), load_split(str(data / "test"), config, stats)
        module = deepctr_arm if library == "deepctr" else rechub_arm
        out = module.run(kind, config, train, test, BATCH, DIM)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("bench-peers-work"))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of every arm")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm in this process
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = prepare(args.work, args.rows)
    if args.arm:
        result = run_arm(args.arm, data, args.work, args.threads)
        (args.work / f"{args.arm}.json").write_text(json.dumps(result, default=float))
        return
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} threads; {args.rows:,} rows; batch {BATCH}; one epoch")
    rows = []
    for arm in args.arms:
        print(f"running {arm} ...", flush=True)
        subprocess.run([sys.executable, __file__, "--arm", arm, "--rows", str(args.rows), "--work", str(args.work),
                        "--threads", str(args.threads)], check=True)
        rows.append(json.loads((args.work / f"{arm}.json").read_text()))
        print(f"  done in {rows[-1]['seconds']:.0f} s", flush=True)
    print(table(rows))
    (args.work / "results.json").write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
