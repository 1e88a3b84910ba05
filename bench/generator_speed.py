"""Benchmark of the synthetic data generator against its target: 1M rows in under 30 s.

Times `recsys_mtl.data.synthetic.generate` (latent tables, calibration, Parquet writing; everything
`make demo` pays for) into a temporary directory and prints one table row plus the realised base rates.
A run of N rows is held to the same throughput, N / (1M / 30 s). Exits 1 when the target is missed.

    python bench/generator_speed.py [--rows N] [--seed S]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile

from recsys_mtl.data.synthetic import GeneratorSpec, generate

TARGET_ROWS = 1_000_000
TARGET_SECONDS = 30.0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=TARGET_ROWS, help="rows to generate (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    return parser.parse_args(argv)


def _peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 when the throughput target is met, else 1."""
    args = _parse_args(argv)
    spec = GeneratorSpec(rows=args.rows, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="generator_speed_") as out_dir:
        summary = generate(out_dir, spec)
    rows_per_s = spec.rows / summary.seconds
    met = rows_per_s >= TARGET_ROWS / TARGET_SECONDS

    header = f"{'rows':>11}  {'seconds':>8}  {'rows/s':>11}  {'peak RSS MiB':>12}  {'target':<16}  met"
    print(header)
    print("-" * len(header))
    print(
        f"{spec.rows:>11,}  {summary.seconds:>8.2f}  {rows_per_s:>11,.0f}  {_peak_rss_mib():>12.0f}  "
        f"{'1M rows < 30 s':<16}  {'yes' if met else 'NO'}"
    )
    print(
        f"\nCTR {summary.ctr:.4f} | CVR|click {summary.cvr_given_click:.4f} | "
        f"mean watch time|click {summary.mean_watch_time_clicked:.1f} s | "
        f"files train {summary.train_files} / test {summary.test_files}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
