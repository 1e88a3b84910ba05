"""Benchmark of the synthetic data generator against its target: 1M rows in under 30 s.

Times `recsys_mtl.data.synthetic.generate` (latent tables, calibration, Parquet writing; everything
`make demo` pays for) into a temporary directory, once per objective preset (default: the classic
three and the six-objective video preset), and prints one table row per preset plus the realised
rates. A run of N rows is held to the same throughput, N / (1M / 30 s). Exits 1 when a row misses it.

    python bench/generator_speed.py [--rows N] [--seed S] [--presets classic,video]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile

from recsys_mtl.data.synthetic import PRESETS, GenerateSummary, GeneratorSpec, generate

TARGET_ROWS = 1_000_000
TARGET_SECONDS = 30.0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=TARGET_ROWS, help="rows to generate (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument(
        "--presets", default="classic,video", help=f"comma list of objective presets ({', '.join(PRESETS)})"
    )
    args = parser.parse_args(argv)
    args.presets = args.presets.split(",")
    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown:
        parser.error(f"--presets: unknown {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    return args


def _peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 when every preset meets the throughput target, else 1."""
    args = _parse_args(argv)
    header = (
        f"{'preset':<8}  {'objectives':>10}  {'rows':>11}  {'seconds':>8}  {'rows/s':>11}  "
        f"{'peak RSS MiB':>12}  {'target':<16}  met"
    )
    print(header)
    print("-" * len(header))
    summaries: dict[str, GenerateSummary] = {}
    all_met = True
    for preset in args.presets:
        spec = GeneratorSpec(rows=args.rows, seed=args.seed, objectives=PRESETS[preset])
        with tempfile.TemporaryDirectory(prefix="generator_speed_") as out_dir:
            summary = summaries[preset] = generate(out_dir, spec)
        rows_per_s = spec.rows / summary.seconds
        met = rows_per_s >= TARGET_ROWS / TARGET_SECONDS
        all_met &= met
        print(
            f"{preset:<8}  {len(spec.objectives):>10}  {spec.rows:>11,}  {summary.seconds:>8.2f}  "
            f"{rows_per_s:>11,.0f}  {_peak_rss_mib():>12.0f}  {'1M rows < 30 s':<16}  {'yes' if met else 'NO'}"
        )
    for preset, summary in summaries.items():
        print(f"\n{preset}: files train {summary.train_files} / test {summary.test_files}")
        for line in summary.rate_lines():
            print(f"  {line}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
