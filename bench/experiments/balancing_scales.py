"""Loss balancing when the task losses differ in scale by orders of magnitude: click + conversion (an
ESMM funnel stage after click; log losses ≈ 0.1–0.2) + watch time as a plain regression on seconds
(`type: regression`, a squared error in the hundreds), trained with each balancing strategy; per-task
AUC / XAUC / RMSE on the test split and the task weights each strategy arrived at.

The other settings are the default model's (`configs/models/mmoe_esmm.yaml`). Run with
`recsys-mtl train` as a user would, on data from `recsys-mtl generate`.

    python bench/experiments/balancing_scales.py [--rows 500000] [--seeds 0 1] [--nproc 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import FIGURES, ROOT, logged_seconds, markdown_table, train, training_arguments, write_section  # noqa: E402

from recsys_mtl.data.synthetic import GeneratorSpec, generate  # noqa: E402

log = logging.getLogger("balancing_scales")
STRATEGIES = ("fixed", "uncertainty", "gradnorm", "dwa", "pcgrad")
# the same model with the default watch-time loss (weighted logistic: all three losses on one scale)
REFERENCE = "reference: fixed, WLR watch time"
TASKS = [
    "tasks=[{name: click}, {name: conversion, after: click}, {name: watch_time, type: regression}]",
]
COLUMNS = [
    ("click", "auc", "click AUC"),
    ("conversion", "auc", "conversion AUC"),
    ("watch_time", "xauc", "watch XAUC"),
    ("watch_time", "rmse", "watch RMSE (s)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args = training_arguments(parser)
    start = time.perf_counter()
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for seed in args.seeds:
            data = work / f"data_seed{seed}"
            if not (data / "config.yaml").exists():
                generate(data, GeneratorSpec(rows=args.rows, seed=seed), overwrite=True)
            for strategy in (*STRATEGIES, REFERENCE):
                balancing = "fixed" if strategy == REFERENCE else strategy
                tasks = [] if strategy == REFERENCE else TASKS
                overrides = [
                    f"data.train={data / 'train'}", f"data.eval={data / 'test'}", f"train.seed={seed}", f"data.seed={seed}",
                    f"train.balancing.strategy={balancing}", *tasks,
                ]
                name = "reference" if strategy == REFERENCE else strategy
                run = train(ROOT / "configs/models/mmoe_esmm.yaml", work / f"run_seed{seed}_{name}", overrides, args.nproc)
                results.setdefault(strategy, []).append(run)
                m = run["metrics"]["metrics"]
                log.info("seed %d %-11s %s (%.0f s)", seed, strategy, {f"{t}.{k}": round(m[t][k], 4) for t, k, _ in COLUMNS}, time.perf_counter() - start)

    def mean_metric(strategy: str, task: str, key: str) -> float:
        return statistics.mean(r["metrics"]["metrics"][task][key] for r in results[strategy])

    def final_weights(strategy: str) -> str:
        last = [next(rec for rec in reversed(r["log"]) if rec["event"] == "train") for r in results[strategy]]
        w = {t: statistics.mean(rec["task_weights"][t] for rec in last) for t in last[0]["task_weights"]}
        return " / ".join(f"{v:.3g}" for v in w.values())

    def mean_cosine(strategy: str) -> str:
        records = [rec for r in results[strategy] for rec in r["log"] if rec["event"] == "train"]
        pairs = records[0]["task_grad_cosine"]
        return " / ".join(f"{statistics.mean(rec['task_grad_cosine'][p] for rec in records):+.2f}" for p in pairs)

    rows = [[s, *(mean_metric(s, t, k) for t, k, _ in COLUMNS), final_weights(s)] for s in (*STRATEGIES, REFERENCE)]
    table = markdown_table(["strategy", *(label for _, _, label in COLUMNS), "final weights click / conversion / watch"], rows)
    oracle = results["fixed"][0]["metrics"]["metrics"]
    oracle_line = ", ".join(
        f"{label} {statistics.mean(r['metrics']['metrics'][t]['oracle_' + k] for r in results['fixed']):.4f}"
        for t, k, label in COLUMNS if f"oracle_{k}" in oracle[t]
    )
    cosines = "; ".join(f"{s} {mean_cosine(s)}" for s in STRATEGIES)
    pairs = " / ".join(next(rec for rec in results["fixed"][0]["log"] if rec["event"] == "train")["task_grad_cosine"])

    FIGURES.mkdir(parents=True, exist_ok=True)
    tasks = list(next(rec for rec in results["fixed"][0]["log"] if rec["event"] == "train")["task_weights"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.4))
    for ax, task in zip(axes, tasks, strict=True):
        for strategy in STRATEGIES:
            records = [rec for rec in results[strategy][0]["log"] if rec["event"] == "train"]
            ax.plot([rec["step"] for rec in records], [rec["task_weights"][task] for rec in records], label=strategy)
        ax.set_yscale("log")
        ax.set_title(f"weight of {task} (seed {args.seeds[0]})")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURES / "balancing_weights.png", dpi=110)

    steps = results["fixed"][0]["metrics"]["steps"]
    command = f"python bench/experiments/balancing_scales.py --rows {args.rows} --seeds {' '.join(map(str, args.seeds))} --nproc {args.nproc}"
    write_section("balancing", f"""
## Balancing mismatched loss scales: click + conversion funnel + watch-time regression

Command: `{command}` (CPU; {logged_seconds([r for rs in results.values() for r in rs]):.0f} s of training in all, as logged).

Setup: `recsys-mtl generate --rows {args.rows:,} --seed S`; the default model (`configs/models/mmoe_esmm.yaml`,
MMoE, 4 experts; tasks click, `{{name: conversion, after: click}}`, watch_time) with the watch-time task
switched to squared error on seconds (`type: regression`), so its loss starts in the thousands while the
two log losses are below 0.7; one epoch ({steps} steps) of
`recsys-mtl train --nproc {args.nproc}`, every strategy at its default settings
(`train.balancing.*`: GradNorm α = 1.5, DWA T = 2 over 100-step windows), seeds
{", ".join(map(str, args.seeds))}. Metrics on the test split, mean over seeds (`click.auc`,
`conversion.auc`: the entire-space p(click) × p(conversion | click) against click-and-convert,
`watch_time.xauc`, `watch_time.rmse`); weights as logged at the last step (mean over seeds). Oracle:
{oracle_line}.

{table}

The last row is not a balancing strategy: it is the same model with the default weighted-logistic
watch-time loss (all three losses on the same scale; its RMSE is of exp(logit), a different estimator),
for what click and conversion reach when no task's loss dwarfs the others.

Mean cosine between the task gradients on the shared dense parameters over the logged steps
({pairs}): {cosines}.

![task weights over training](experiments/balancing_weights.png)
""")


if __name__ == "__main__":
    main()
