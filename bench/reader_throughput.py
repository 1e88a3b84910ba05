"""Reader throughput on one core: Parquet -> Batch (KJT + dense + labels) rows/s, beside raw pyarrow.

Target (issue 2): at least 300k rows/s on one core of the 2-core dev machine, so that reading never
limits training. The process is pinned to one CPU and torch/Arrow thread pools are set to one thread;
the prefetch thread then shares that core with the consumer. The reference row is pyarrow alone
reading the same columns row group by row group (decode only, no feature processing), so the ratio
shows what feature processing costs on top of decoding.

    python bench/reader_throughput.py [--rows 1000000] [--batch-size 4096] [--data DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

from recsys_mtl.config import load_config
from recsys_mtl.data.reader import BatchReader
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.data.synthetic import GeneratorSpec, generate
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor

TARGET_ROWS_PER_S = 300_000


def pin_to_one_core() -> str:
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to CPU {core}"
    return "not pinned (no sched_setaffinity)"


def best_of(repeats: int, run) -> float:
    """Best seconds of ``repeats`` runs (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate when --data is not given")
    parser.add_argument("--data", type=Path, help="a directory written by `recsys-mtl generate`")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp)
            generate(data, GeneratorSpec(rows=args.rows, test_fraction=0.01))
        pinned = pin_to_one_core()
        config = load_config(data / "config.yaml", [f"data.batch_size={args.batch_size}"])
        source = ParquetSource(config.data.train)
        stats = DenseStats.of_source(config.features.dense, source)
        processor = FeatureProcessor(config, stats)
        rows = source.num_rows

        def pyarrow_only() -> None:
            for _ in source.iter_tables(processor.columns):
                pass

        def reader(prefetch: int, shuffle: bool):
            def run() -> None:
                for _ in BatchReader(source, processor, batch_size=args.batch_size, prefetch=prefetch, shuffle=shuffle):
                    pass
            return run

        runs = [
            ("pyarrow read_row_group (reference, no processing)", pyarrow_only),
            ("recsys-mtl BatchReader, inline", reader(0, False)),
            ("recsys-mtl BatchReader, prefetch=4", reader(4, False)),
            ("recsys-mtl BatchReader, prefetch=4, shuffle", reader(4, True)),
        ]
        print(f"{rows:,} rows, {len(source.files)} files, {len(source.row_groups)} row groups, "
              f"{len(processor.feature_keys)} id features + {len(config.features.dense)} dense, "
              f"batch {args.batch_size}; {pinned}; best of {args.repeats}")
        print(f"{'path':<52}{'seconds':>9}{'rows/s':>12}{'vs pyarrow':>12}")
        reference = None
        for name, run in runs:
            seconds = best_of(args.repeats, run)
            reference = reference or seconds
            print(f"{name:<52}{seconds:>9.2f}{rows / seconds:>12,.0f}{reference / seconds:>11.2f}x")
        print(f"target: >= {TARGET_ROWS_PER_S:,} rows/s through the reader on one core")


if __name__ == "__main__":
    main()
