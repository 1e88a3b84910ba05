"""Six objectives in one model against each objective alone (negative transfer), on the synthetic
`video` logs: click, like, follow, finish (funnel stages after click), share (entire space) and
watch_time (seconds on clicked rows, weighted logistic).

Every model is the default one (the generated config: MMoE, 4 experts, batch 512, the example
config's optimiser), trained by `recsys-mtl train` for one epoch with the same settings; only the task
list differs. The 6-task model has the generated task list. Each single-task model has one task:
click, share and watch_time as in the 6-task list; a funnel stage is trained alone as a plain binary
task on its label over every impression (`{name: like}`, not `{name: like, after: click}`, which
needs click in the list, nor `{name: like, where: click}`, which would predict p(like | click) and be
scored on clicked rows only). Both models are then scored on the same target: the entire-space `auc`
of the task (for the 6-task model's funnel stage, its p(click) × p(like | click) output; for the single
task, its p(like)) against the like label over every test impression (like implies click). Watch
time's headline is `xauc`. The oracle column scores the generator's true values (`oracle_<label>`).
Difference: 6-task − single; negative where sharing the network with the other five tasks hurts.

`--threads N` sets OMP_NUM_THREADS of the training runs (default: the CLI's, cores / processes); on a
machine shared with other jobs 1 thread is much faster.

    python bench/experiments/objectives.py [--rows 300000] [--seeds 0] [--nproc 1] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402
from common import FIGURES, logged_seconds, markdown_table, train, training_arguments, write_section  # noqa: E402

from recsys_mtl.data.synthetic import PRESETS, GeneratorSpec, generate  # noqa: E402

log = logging.getLogger("objectives")
OBJECTIVES = PRESETS["video"]
MULTI = "6 tasks"


def headline(task: dict) -> str:
    """The metric a task is compared on: entire-space AUC for binary tasks, XAUC for the others."""
    return "auc" if task.get("type", "binary") == "binary" else "xauc"


def auc_standard_error(a: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982): the standard error of an AUC of ``a`` measured on these class counts."""
    if positives == 0 or negatives == 0 or math.isnan(a):
        return math.nan
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    variance = a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)
    return math.sqrt(max(variance, 0.0) / (positives * negatives))


def alone(task: dict) -> dict:
    """The task's entry in its single-task model: a funnel stage becomes a plain binary task on its
    label over every row (its entire-space probability, learned directly)."""
    return {k: v for k, v in task.items() if k != "after"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the training runs")
    args = training_arguments(parser, rows=300_000, seeds=[0], nproc=1)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    # (model, task) -> [metric per seed]; model is MULTI or the task's name (its single-task model)
    values: dict[tuple[str, str], list[float]] = {}
    runs: list[dict] = []
    positives: dict[str, list[int]] = {}  # positive test rows per task and seed
    test_rows = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for seed in args.seeds:
            data = work / f"data_video_seed{seed}"
            if not (data / "config.yaml").exists():
                generate(data, GeneratorSpec(rows=args.rows, seed=seed, objectives=OBJECTIVES), overwrite=True)
            tasks = yaml.safe_load((data / "config.yaml").read_text())["tasks"]
            test = pq.read_table(data / "test", columns=[t["name"] for t in tasks])
            test_rows = test.num_rows
            for t in tasks:
                positives.setdefault(t["name"], []).append(int((test.column(t["name"]).to_numpy() > 0).sum()))
            base = [f"train.seed={seed}", f"data.seed={seed}"]
            models = {MULTI: base} | {
                t["name"]: [*base, f"tasks={json.dumps([alone(t)])}", "ranking.terms=null"] for t in tasks
            }
            for model, overrides in models.items():
                out = work / f"run_seed{seed}_{'all' if model == MULTI else model}"
                run = train(data / "config.yaml", out, overrides, args.nproc)
                runs.append(run)
                metrics = run["metrics"]["metrics"]
                for t in tasks if model == MULTI else [t for t in tasks if t["name"] == model]:
                    metric = headline(t)
                    values.setdefault((model, t["name"]), []).append(metrics[t["name"]][metric])
                    if model == MULTI:
                        values.setdefault(("oracle", t["name"]), []).append(metrics[t["name"]][f"oracle_{metric}"])
                log.info("seed %d %-10s %s (%.0f s)", seed, model, {t: round(v[-1], 4) for (m, t), v in values.items() if m == model},
                         time.perf_counter() - start)

    def mean(model: str, task: str) -> float:
        return statistics.mean(values[(model, task)])

    rows = []
    diffs: dict[str, float] = {}
    steady: list[str] = []  # tasks whose difference has the same sign in every seed
    for t in tasks:
        name = t["name"]
        per_seed = [m - s for m, s in zip(values[(MULTI, name)], values[(name, name)], strict=True)]
        diffs[name] = statistics.mean(per_seed)
        if len(per_seed) > 1 and (all(d > 0 for d in per_seed) or all(d < 0 for d in per_seed)):
            steady.append(name)
        kind = f"after {t['after']}" if "after" in t else t.get("type", "binary")
        pos = statistics.mean(positives[name])
        se = auc_standard_error(mean(name, name), round(pos), test_rows - round(pos)) if headline(t) == "auc" else "–"
        shown = [diffs[name], *(per_seed if len(per_seed) > 1 else [])]  # the mean, then each seed's
        diff = " / ".join("–" if math.isnan(d) else f"{d:+.4f}" for d in shown)
        rows.append([name, kind, f"{pos:,.0f}", headline(t), mean(MULTI, name), mean(name, name), mean("oracle", name), diff, se])
    table = markdown_table(["task", "type", "test positives", "metric", "6-task model", "single-task model", "oracle",
                            "6-task − single" + (" (mean / per seed)" if len(args.seeds) > 1 else ""), "s.e. of one AUC"], rows)

    FIGURES.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    names = list(diffs)
    ax.bar(names, [diffs[n] for n in names], color=["tab:green" if diffs[n] >= 0 else "tab:red" for n in names])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("6-task − single (AUC / XAUC)")
    ax.set_title(f"transfer per objective, mean of {len(args.seeds)} seed(s)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(FIGURES / "objectives_transfer.png", dpi=110)

    helped = [n for n in names if diffs[n] > 0]
    hurt = [n for n in names if diffs[n] < 0]
    steady_line = (
        f"; the sign is the same in every seed for {', '.join(steady) or 'no task'}" if len(args.seeds) > 1 else ""
    )
    steps = runs[0]["metrics"]["steps"]
    command = (
        f"python bench/experiments/objectives.py --rows {args.rows} --seeds {' '.join(map(str, args.seeds))} "
        f"--nproc {args.nproc}" + (f" --threads {args.threads}" if args.threads else "")
    )
    write_section("objectives", f"""
## Six objectives in one model vs. each alone (negative transfer)

Command: `{command}` (CPU; {logged_seconds(runs):.0f} s of training in all, as logged).

Setup: `recsys-mtl generate --rows {args.rows:,} --objectives video --seed S` (90 % train, {test_rows:,}
test rows): click; like, follow (whose signal conflicts with click's) and finish (which follows watch
time) after click; share on the entire space; watch time in seconds on clicked rows. One epoch
({steps} steps) of `recsys-mtl train --nproc {args.nproc}` with the generated config (MMoE, 4 experts,
batch 512, dense LR 0.005) for the 6-task model and for each task alone, seeds
{", ".join(map(str, args.seeds))} (data and model); nothing else differs. A funnel stage alone is a
plain binary task on its label over every impression (`{{name: like}}`): `after: click` needs the click
task beside it, and `where: click` would learn and be scored on clicked rows only. So every binary task
is compared on the entire-space `auc` (for the 6-task model's funnel stages, of p(click) ×
p(task | click); like implies click, so the label is the same); watch time on `xauc`. For a funnel
stage the 6-task model thus also learns from the click labels through its p(click) factor, which the
single binary task does not see: part of what the comparison measures. Oracle: the
generator's true values (`oracle_<label>`, on the 6-task run's evaluation). Cells: test split, mean
over seeds; "test positives": positive test rows; "s.e. of one AUC": the Hanley–McNeil standard error
of the single-task AUC at these class counts, the scale of the noise (a paired difference of two models
on the same rows is usually less noisy than that).

{table}

The 6-task model is ahead on {", ".join(helped) or "no task"} and behind on {", ".join(hurt) or "no task"}
(negative transfer where behind){steady_line}.

![transfer per objective](experiments/objectives_transfer.png)
""")


if __name__ == "__main__":
    main()
