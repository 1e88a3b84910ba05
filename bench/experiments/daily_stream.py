"""Incremental training on a synthetic day stream (issue 15, item 5): day by day, the AUC of
(a) warm-started incremental training (day d trained from (a)'s day d-1 run with `train --init-from`;
day 1 from scratch), (b) training each day from scratch on that day only, and (c) training from scratch
on all days so far (days 1..d together), each evaluated on day d+1's test split (the same rows for all
three, unseen by all of them), and the wall time of each `recsys-mtl train` command.

    python bench/experiments/daily_stream.py [--rows 500000] [--days 3] [--work DIR] [--out daily_stream.json]

Generates ``--days + 1`` days (`recsys-mtl generate --days`; the last only for evaluating) into
``--work`` (reused when it holds them; default: a temp dir). One process, a small model
(`model.hidden_dims=[64,32]`), one epoch per run. Prints a Markdown table and writes the results to
``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["model.hidden_dims=[64,32]", "train.epochs=1"]
METRICS = (("click", "auc"), ("conversion", "auc"), ("watch_time", "xauc"))
ARMS = {"a": "warm start from day d-1", "b": "scratch, day d only", "c": "scratch, days 1..d"}


def cli(*arguments: str) -> float:
    """One `recsys-mtl` command in a subprocess; its wall time in seconds."""
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    cmd = [sys.executable, "-m", "recsys_mtl", "--log-level", "WARNING", *arguments]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return time.perf_counter() - started


def train(data: Path, day: int, arm: str, runs: Path, train_dirs: list[Path]) -> dict:
    """Train arm ``arm`` for ``day`` on ``train_dirs``, evaluated (by train itself) on day+1's test split."""
    out = runs / f"{arm}_day{day}"
    init = ["--init-from", str(runs / f"a_day{day - 1}")] if arm == "a" and day > 1 else []
    if len(train_dirs) == 1:
        train_path = train_dirs[0]
    else:  # ParquetSource reads every .parquet file under a directory: link the days' files into one
        train_path = runs / f"train_days_1_{day}"
        train_path.mkdir(parents=True, exist_ok=True)
        for d in train_dirs:
            for part in sorted(d.glob("*.parquet")):
                link = train_path / f"{d.parent.name}-{part.name}"
                if not link.exists():
                    link.symlink_to(part.resolve())
    if not (out / "metrics.json").exists():
        seconds = cli("train", "--config", str(data / f"day_{day}" / "config.yaml"), "--out", str(out), "--nproc", "1",
                      *init, f"data.train={train_path}", f"data.eval={data / f'day_{day + 1}' / 'test'}", *OVERRIDES)
        (out / "wall_seconds").write_text(f"{seconds:.3f}\n")
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    result = {f"{t} {m}": metrics[t][m] for t, m in METRICS if m in metrics.get(t, {})}
    return {"arm": arm, "day": day, "train_rows_days": len(train_dirs), "seconds": float((out / "wall_seconds").read_text()), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000, help="rows generated per day")
    parser.add_argument("--days", type=int, default=3, help="days trained (one more is generated for evaluation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep data and runs here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("daily_stream.json"), help="results (JSON)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        data, runs = work / "data", work / "runs"
        if not (data / f"day_{args.days + 1}" / "config.yaml").is_file():
            cli("generate", "--out", str(data), "--rows", str(args.rows), "--days", str(args.days + 1), "--seed", str(args.seed))
        runs.mkdir(parents=True, exist_ok=True)
        results = []
        for day in range(1, args.days + 1):
            days = [data / f"day_{d}" / "train" for d in range(1, day + 1)]
            for arm in ARMS:
                if day == 1 and arm != "a":  # on day 1 all three are the same run: from scratch on day 1
                    results.append({**results[0], "arm": arm})
                    continue
                results.append(train(data, day, arm, runs, days if arm == "c" else days[-1:]))
                print(f"day {day} ({arm}) {results[-1]}", file=sys.stderr, flush=True)
    names = [f"{t} {m}" for t, m in METRICS]
    header = ["day", "eval on", "training", "train days", *names, "train wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [str(r["day"]), f"day {r['day'] + 1} test", f"({r['arm']}) {ARMS[r['arm']]}", str(r["train_rows_days"]),
                 *(f"{r[n]:.4f}" if n in r else "–" for n in names), f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    args.out.write_text(json.dumps({"rows_per_day": args.rows, "days": args.days, "seed": args.seed, "overrides": OVERRIDES,
                                    "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
