"""Sparse mixture-of-experts against dense MMoE as the expert count grows (issue 16, item 3): the same
generated data and model but the backbone, `mmoe` with E experts against `sparse_moe` with E experts and
top-2 routing, E = 4, 16, 64, one epoch each with `recsys-mtl train`; per run each task's headline metric
and the training samples/s (`metrics.json`). The cost per sample of the backbone alone is
`bench/sparse_moe_cost.py`.

    python bench/experiments/sparse_moe_experts.py [--rows 100000] [--experts 4 16 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from daily_stream import cli

OVERRIDES = ["model.hidden_dims=[64,32]", "train.epochs=1"]
METRICS = (("click", "auc"), ("conversion", "auc"), ("watch_time", "xauc"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--experts", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep data and runs here (default: a temp dir)")
    args = parser.parse_args()
    lines = ["| E | backbone | " + " | ".join(f"{t} {m}" for t, m in METRICS) + " | samples/s |", "|---:|---|" + "---:|" * (len(METRICS) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        data = work / "data"
        if not (data / "config.yaml").is_file():
            cli("generate", "--out", str(data), "--rows", str(args.rows), "--seed", str(args.seed))
        for experts in args.experts:
            for backbone in ("mmoe", "sparse_moe"):
                out = work / f"{backbone}_{experts}"
                if not (out / "metrics.json").is_file():
                    cli("train", "--config", str(data / "config.yaml"), "--out", str(out), "--nproc", "1", *OVERRIDES,
                        f"model.backbone={backbone}", f"model.num_experts={experts}", "model.moe_top_k=2", f"train.seed={args.seed}")
                result = json.loads((out / "metrics.json").read_text())
                cells = [f"{result['metrics'][t][m]:.4f}" for t, m in METRICS]
                lines.append(f"| {experts} | {backbone} | " + " | ".join(cells) + f" | {result['samples_per_s']:,.0f} |")
    print("\n".join(lines))  # noqa: T201 - a benchmark's result


if __name__ == "__main__":
    main()
