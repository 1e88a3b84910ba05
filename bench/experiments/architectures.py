"""Every multi-task architecture on the synthetic `video` logs (six objectives: click; like, follow and
finish after click; share; watch_time), against MMoE and the generator's oracle.

One dataset (`--objectives video`, data seed 0) is generated once; each architecture is the generated
config (MMoE, 4 experts, batch 512) with a few `model.*` overrides, trained by `recsys-mtl train` for
one epoch with `data.seed=0` and `train.seed=S` for each of `--seeds`; nothing else differs. Headline
per task as in objectives.py: the entire-space `auc` of binary tasks (for a funnel stage, of its
p(click) × p(stage | click) output), `xauc` of watch_time; the oracle row scores the generator's true
values (`oracle_<metric>`). Also the training throughput (metrics.json `samples_per_s`) and the
parameter count of the trained model (all, and without the embedding tables).

A run that crashes is recorded (its error goes into the section) and the others go on.

`--threads N` sets OMP_NUM_THREADS of the training runs (default: the CLI's, cores / processes); on a
machine shared with other jobs 1 thread is much faster.

    python bench/experiments/architectures.py [--rows 200000] [--seeds 0 1 2] [--nproc 1] [--threads 1]
        [--only mmoe ple ...] [--work DIR]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from common import logged_seconds, markdown_table, train, training_arguments, write_section

from recsys_mtl.data.synthetic import PRESETS, GeneratorSpec, generate
from recsys_mtl.train.run_dir import load_run

log = logging.getLogger("architectures")
DATA_SEED = 0
BASELINE = "mmoe"
# name -> `recsys-mtl train` overrides on the generated config (whose backbone is mmoe);
# "{domain}" is replaced by the generated config's context-side id features (device, hour)
ARCHITECTURES: dict[str, list[str]] = {
    "shared_bottom": ["model.backbone=shared_bottom"],
    "mmoe": ["model.backbone=mmoe"],
    "ple": ["model.backbone=ple"],
    "cross_stitch": ["model.backbone=cross_stitch"],
    "sluice": ["model.backbone=sluice", "model.hidden_dims=[128,128]"],
    "soft_sharing": ["model.backbone=soft_sharing"],
    "sparse_moe": ["model.backbone=sparse_moe", "model.num_experts=8", "model.moe_top_k=2"],
    "dselect": ["model.backbone=sparse_moe", "model.moe_router=dselect", "model.num_experts=8", "model.moe_top_k=2"],
    "mmoe+pepnet": ["model.backbone=mmoe", "model.gating={domain_features: [{domain}]}"],
    "mmoe+aitm": ["model.backbone=mmoe", "model.tower_transfer=aitm"],
}


def headline(task: dict) -> str:
    """The metric a task is compared on: entire-space AUC for binary tasks, XAUC for the others."""
    return "auc" if task.get("type", "binary") == "binary" else "xauc"


def parameters(run: Path) -> tuple[int, int]:
    """(all, dense) parameters of the trained model: dense leaves out the embedding tables."""
    model = load_run(run).module.model
    total = sum(p.numel() for p in model.parameters())
    tables = sum(p.numel() for name, p in model.named_parameters() if name.startswith("ebc."))  # the feature tables
    return total, total - tables


def spread(values: list[float]) -> float:
    """Half the range over seeds (2 seeds), the sample standard deviation from 3 seeds on."""
    if len(values) < 2:
        return math.nan
    return statistics.stdev(values) if len(values) >= 3 else (max(values) - min(values)) / 2


def cell(values: list[float], digits: int = 4) -> str:
    if not values:
        return "–"
    mean = statistics.mean(values)
    return f"{mean:.{digits}f}" + ("" if len(values) < 2 else f" ± {spread(values):.{digits}f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the training runs")
    parser.add_argument("--only", nargs="+", choices=list(ARCHITECTURES), default=list(ARCHITECTURES),
                        help="architectures to run (default: all)")
    args = training_arguments(parser, rows=200_000, seeds=[0, 1], nproc=1)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    values: dict[tuple[str, str], list[float]] = {}  # (architecture, task) -> per seed
    speed: dict[str, list[float]] = {}
    params: dict[str, tuple[int, int]] = {}
    errors: dict[str, str] = {}
    oracle: dict[str, float] = {}
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        data = work / f"data_video_rows{args.rows}_seed{DATA_SEED}"
        if not (data / "config.yaml").exists():
            generate(data, GeneratorSpec(rows=args.rows, seed=DATA_SEED, objectives=PRESETS["video"]), overwrite=True)
        config = yaml.safe_load((data / "config.yaml").read_text())
        tasks = config["tasks"]
        domain = [f["name"] for f in config["features"]["sparse"] if f.get("side") == "context"]
        test = pq.read_table(data / "test", columns=[t["name"] for t in tasks])
        positives = {t["name"]: int((test.column(t["name"]).to_numpy() > 0).sum()) for t in tasks}
        for arch in args.only:
            overrides = [o.replace("{domain}", ", ".join(domain)) for o in ARCHITECTURES[arch]]
            for seed in args.seeds:
                out = work / f"run_{arch.replace('+', '_')}_seed{seed}"
                try:
                    run = train(data / "config.yaml", out, [*overrides, f"train.seed={seed}", f"data.seed={DATA_SEED}"],
                                args.nproc)
                    if arch not in params:
                        params[arch] = parameters(out)
                except Exception as exc:  # a library crash: record it, go on with the others
                    errors[arch] = str(exc).strip().splitlines()[-1][:300]
                    log.error("%s seed %d failed: %s", arch, seed, errors[arch])
                    break
                runs.append(run)
                metrics = run["metrics"]["metrics"]
                speed.setdefault(arch, []).append(run["metrics"]["samples_per_s"])
                for t in tasks:
                    metric = headline(t)
                    values.setdefault((arch, t["name"]), []).append(metrics[t["name"]][metric])
                    oracle[t["name"]] = metrics[t["name"]][f"oracle_{metric}"]  # the same test rows in every run
                log.info("%-13s seed %d %s %.0f samples/s (%.0f s)", arch, seed,
                         {t["name"]: round(values[(arch, t["name"])][-1], 4) for t in tasks},
                         speed[arch][-1], time.perf_counter() - start)

    names = [t["name"] for t in tasks]
    done = [a for a in args.only if a in speed]
    rows = [[a, *(cell(values[(a, n)]) for n in names), cell(speed[a], 0), f"{params[a][0]:,}", f"{params[a][1]:,}"]
            for a in done]
    rows.append(["oracle", *(f"{oracle[n]:.4f}" for n in names), "–", "–", "–"])
    header = ["architecture", *(f"{n} ({headline(t)})" for n, t in zip(names, tasks, strict=True)),
              "samples/s", "parameters", "dense parameters"]
    table = markdown_table(header, rows)

    # against MMoE: a difference counts only beyond the seed spread (the two models' spreads added up)
    verdict: dict[str, tuple[list[str], list[str]]] = {}  # architecture -> (ahead, behind), "task +diff"
    ahead_tasks: set[str] = set()
    if BASELINE in done:
        for a in done:
            if a == BASELINE:
                continue
            better, worse = [], []
            for n in names:
                a_v, b_v = values[(a, n)], values[(BASELINE, n)]
                margin = spread(a_v) + spread(b_v)
                diff = statistics.mean(a_v) - statistics.mean(b_v)
                if not math.isnan(margin) and diff > margin:
                    better.append(f"{n} {diff:+.4f}")
                    ahead_tasks.add(n)
                elif not math.isnan(margin) and diff < -margin:
                    worse.append(f"{n} {diff:+.4f}")
            verdict[a] = (better, worse)
    no_help = [a for a, (better, _) in verdict.items() if not better]
    behind = [f"{a} ({', '.join(w)})" for a, (b, w) in verdict.items() if w and not b]
    helps = [f"{a} ({', '.join(b)}{'; behind on ' + ', '.join(w) if w else ''})"
             for a, (b, w) in verdict.items() if b]
    untouched = [n for n in names if n not in ahead_tasks]
    summary = (
        f"Against MMoE (a task counts only where the difference of means exceeds the two models' seed "
        f"spreads added together): **{', '.join(no_help) or 'none'} do not help on any task**"
        + (f"; behind MMoE: {', '.join(behind)}" if behind else "")
        + ". "
        + (f"Ahead of MMoE on some task (difference of means): {'; '.join(helps)}. " if helps else
           "No architecture is ahead of MMoE on any task. ")
        + (f"No architecture beats MMoE beyond the spread on {', '.join(untouched)}." if untouched else "")
    )
    if errors:
        summary += " Failed (not in the table): " + "; ".join(f"{a}: `{e}`" for a, e in errors.items()) + "."

    steps = runs[0]["metrics"]["steps"] if runs else 0
    command = (
        f"python bench/experiments/architectures.py --rows {args.rows} --seeds {' '.join(map(str, args.seeds))} "
        f"--nproc {args.nproc}" + (f" --threads {args.threads}" if args.threads else "")
        + ("" if args.only == list(ARCHITECTURES) else f" --only {' '.join(args.only)}")
    )
    overrides_list = "\n".join(
        f"- {a}: `{' '.join(o.replace('{domain}', ', '.join(domain)) for o in ARCHITECTURES[a])}`" for a in args.only
    )
    spread_name = "half the range" if len(args.seeds) == 2 else "the standard deviation"
    write_section("architectures", f"""
## Every multi-task architecture on six objectives

Command: `{command}` (CPU; {logged_seconds(runs):.0f} s of training in all, as logged).

Setup: `recsys-mtl generate --rows {args.rows:,} --objectives video --seed {DATA_SEED}` once (90 % train,
{test.num_rows:,} test rows; test positives: {", ".join(f"{n} {positives[n]:,}" for n in names)}); one epoch
({steps} steps) of `recsys-mtl train --nproc {args.nproc}` with the generated config (MMoE, 4 experts,
hidden 256-128, towers 64, batch 512, dense LR 0.005) and only these `model.*` overrides:

{overrides_list}

Seeds {", ".join(map(str, args.seeds))} (`train.seed`; `data.seed={DATA_SEED}` and the data fixed). Cells: test
split, mean ± {spread_name} over seeds. Binary tasks: entire-space `auc` (a funnel stage's
p(click) × p(stage | click) output against its label on every impression); watch_time: `xauc`. Oracle:
the generator's true values. samples/s: training throughput from metrics.json (one process, on a CPU
shared with other jobs, so only a rough ranking). Parameters: the trained model's, with the embedding
tables ({params[done[0]][0] - params[done[0]][1]:,} of them, the same in every row) and without
("dense").

{table}

{summary} With {len(args.seeds)} seeds the spread is itself a rough estimate, and the test set is small for
the rare labels (follow's AUC rests on {positives.get("follow", 0)} positives), so small differences there are noise.
""" if done else "## Every multi-task architecture on six objectives\n\nNo run finished.")


if __name__ == "__main__":
    main()
