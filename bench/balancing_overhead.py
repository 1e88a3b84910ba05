"""What each loss-balancing strategy costs: training samples/s of the default model (MMoE over the
generated data's tasks) with every `train.balancing.strategy`, beside `fixed` in the same run of this
script, at 1 and 2 processes and the same batch size.

Each strategy runs `recsys-mtl train` as a user would (`bench/train_throughput.py`'s `run`: the
per-interval samples/s of the job log, the first interval dropped as warm-up), with
`train.balancing.log_gradients=false` so that only the strategy's own gradient work is measured.

    python bench/balancing_overhead.py [--rows 300000] [--batch-size 4096] [--steps 40] [--nprocs 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import typing
from pathlib import Path

from train_throughput import run

from recsys_mtl.config.schema import BalancingConfig
from recsys_mtl.data.synthetic import GeneratorSpec, generate

STRATEGIES = typing.get_args(BalancingConfig.model_fields["strategy"].annotation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=40, help="steps per run (per rank)")
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, GeneratorSpec(rows=args.rows, seed=0))
        for nproc in args.nprocs:
            rates = {}
            for strategy in ["fixed", *(s for s in args.strategies if s != "fixed")]:
                out = Path(tmp) / f"{strategy}_{nproc}"
                overrides = [f"train.balancing.strategy={strategy}", "train.balancing.log_gradients=false"]
                rates[strategy] = statistics.median(run(data, out, nproc, args.batch_size, args.steps, args.log_every, overrides))
                rows.append((nproc, strategy, rates[strategy], rates[strategy] / rates["fixed"]))
    lines = ["| processes | strategy | samples/s | vs fixed |", "| ---: | --- | ---: | ---: |"]
    lines += [f"| {n} | `{s}` | {rate:,.0f} | {ratio:.2f}x |" for n, s, rate, ratio in rows]
    print("\n".join(lines))  # noqa: T201 - a benchmark's result


if __name__ == "__main__":
    main()
