"""Training throughput of the default model in samples/s, after warm-up: MMoE over the generated data's
tasks (click, `{name: conversion, after: click}` as an ESMM funnel, watch time by weighted logistic).

Runs `recsys-mtl train` as a user would (1 process, then 2 processes through --nproc) on generated
data, and reads the per-interval samples/s that the job log records, dropping the first interval
(warm-up: planner, first batches, allocator). The table puts each run beside the 1-process run.
Where CUDA is available the same runs use the GPU(s) (NCCL, fused fbgemm kernels).

    python bench/train_throughput.py [--rows 600000] [--batch-size 4096] [--steps 100] [--nprocs 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from recsys_mtl.data.synthetic import GeneratorSpec, generate


def run(
    data: Path, out: Path, nproc: int, batch_size: int, steps: int, log_every: int, overrides: Sequence[str] = ()
) -> list[float]:
    """`recsys-mtl train` on ``data``'s config (plus ``overrides``) without evaluation; the samples/s of
    every logged interval but the first."""
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    cmd = [
        sys.executable, "-m", "recsys_mtl", "--log-level", "WARNING", "train", "--config", str(data / "config.yaml"),
        "--out", str(out), "--nproc", str(nproc), f"data.batch_size={batch_size}", f"train.max_steps={steps}",
        f"train.log_every_steps={log_every}", "data.eval=null", *overrides,
    ]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    rates = [r["samples_per_s"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if r["event"] == "train"]
    return rates[1:]  # the first interval is warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=100, help="steps per run (per rank)")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, GeneratorSpec(rows=args.rows))
        print(f"default model (MMoE; click, conversion after click, watch_time), batch {args.batch_size} per rank, {args.steps} steps, {device}")
        print(f"{'processes':>10}{'samples/s (median)':>22}{'min':>12}{'max':>12}{'vs 1 process':>14}")
        base = None
        for nproc in args.nprocs:
            rates = run(data, Path(tmp) / f"run{nproc}", nproc, args.batch_size, args.steps, args.log_every)
            median = statistics.median(rates)
            base = base or median
            print(f"{nproc:>10}{median:>22,.0f}{min(rates):>12,.0f}{max(rates):>12,.0f}{median / base:>13.2f}x")


if __name__ == "__main__":
    main()
