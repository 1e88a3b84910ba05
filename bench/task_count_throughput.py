"""Training throughput of the default model (MMoE, 4 experts) as the task list grows: 1, 3 and 6
tasks on the same generated `video` data (click, like, follow, share, finish, watch_time).

The task lists are the generated config's entries: 1 = click; 3 = click, `{name: like, after: click}`,
`{name: watch_time, type: weighted_logistic}`; 6 = all of them (like, follow and finish after click,
share on the entire space). Every other setting is the same: `recsys-mtl train` as a user would run it,
one process, the batch size and step count below, no evaluation (`data.eval=null`), the ranking score
over every task's output. The runs take turns (1, 3, 6 tasks, then again `--repeats` times), so a
machine shared with other work slows each about as much. Reported: the per-interval samples/s of the
job logs without each run's first interval (warm-up: planner, first batches, allocator), median / min /
max over the repeats' intervals, and the median relative to 1 task. Each task adds a tower, a loss, a
gate (MMoE) and, on logged steps, a per-task gradient for the conflict report, while the embeddings
and experts are shared: the cost per task is what this measures.

`--threads N` sets OMP_NUM_THREADS of the training processes (default: the CLI's, cores / processes);
on a machine shared with other jobs 1 thread is far steadier, since a thread pool waiting on a busy
core stalls every step.

    python bench/task_count_throughput.py [--rows 200000] [--batch-size 512] [--steps 150] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch
import yaml
from train_throughput import run  # bench/train_throughput.py

from recsys_mtl.data.synthetic import PRESETS, GeneratorSpec, generate

TASK_SETS = {1: ("click",), 3: ("click", "like", "watch_time"), 6: PRESETS["video"]}


def task_overrides(data: Path, names: tuple[str, ...]) -> list[str]:
    """Overrides keeping the generated config's entries of ``names`` (in its order), ranking by default."""
    tasks = [t for t in yaml.safe_load((data / "config.yaml").read_text())["tasks"] if t["name"] in names]
    if len(tasks) != len(names):
        raise SystemExit(f"the generated config lacks some of {names}: {[t['name'] for t in tasks]}")
    return [f"tasks={json.dumps(tasks)}", "ranking.terms=null"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=150, help="train.max_steps of every run")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="runs per task count, taking turns")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the training runs")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    threads = os.environ.get("OMP_NUM_THREADS", "the CLI's default")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, GeneratorSpec(rows=args.rows, seed=args.seed, objectives=PRESETS["video"]))
        rates: dict[int, list[float]] = {count: [] for count in TASK_SETS}
        for repeat in range(args.repeats):
            for count, names in TASK_SETS.items():
                rates[count] += run(data, Path(tmp) / f"run{count}_{repeat}", 1, args.batch_size, args.steps,
                                    args.log_every, task_overrides(data, names))
        print(
            f"default model (MMoE, 4 experts) on {args.rows:,} generated video rows, batch {args.batch_size}, "
            f"{args.steps} steps x {args.repeats} runs per task count, 1 process, {threads} thread(s), {device}"
        )
        print(f"{'tasks':>5}  {'task list':<48}{'samples/s (median)':>20}{'min':>10}{'max':>10}{'vs 1 task':>11}")
        base = statistics.median(rates[1])
        for count, names in TASK_SETS.items():
            median = statistics.median(rates[count])
            print(f"{count:>5}  {', '.join(names):<48}{median:>20,.0f}{min(rates[count]):>10,.0f}"
                  f"{max(rates[count]):>10,.0f}{median / base:>10.2f}x")


if __name__ == "__main__":
    main()
