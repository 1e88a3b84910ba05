"""Every loss-balancing strategy (`train.balancing.strategy`) on the generator's objectives with one
deliberately conflicting objective and one objective whose loss is about 100× the others'.

Data: `recsys-mtl generate --objectives all --task-corr -0.8` (click; conversion, like, follow, finish
after click; share on the entire space; watch time): conversion's conditional logit is
-0.8 · z_click + 0.6 · z_indep, anti-correlated with click's (the conflicting objective; follow's
-0.6 · z_click + 0.8 · z_own conflicts too, more mildly). The watch_time task is switched to a plain
squared error on seconds (`{name: watch_time, type: regression, scale: s}`) with the `scale` s picked
so that its loss at initialisation, as `recsys-mtl validate-data` prints it, is `--loss-ratio` (100) ×
the median of the other tasks' (s² × its loss at scale 1; s rounded to two digits, measured again on
every seed's train split and reported).

Every strategy is trained by `recsys-mtl train` for one epoch with the same data, model (the
generated config: MMoE, 4 experts, batch 512), seeds and settings, every `train.balancing.*` key at
its default; only `train.balancing.strategy` differs. Headline per task: the entire-space `auc` of a
binary task (for a funnel stage its p(click) × p(stage | click) output against its label on every test
impression, as in objectives.py), `xauc` of watch time; the oracle row scores the generator's true
values (`oracle_<label>`) the same way. Cells: mean ± half-range over the seeds (seed S: data and
model seed S). A strategy helps (hurts) a task "beyond the seed spread" when its range over the seeds
lies wholly above (below) fixed's. A strategy that fails is recorded with its error, not fixed.

`--threads N` sets OMP_NUM_THREADS of the training runs (on a machine shared with other jobs 1 thread
is much faster); `--work DIR` keeps the data and the finished runs and reuses them.

    python bench/experiments/balancing_study.py [--rows 400000] [--test-fraction 0.35] [--seeds 0 1]
        [--nproc 1] [--threads 1] [--work DIR]
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
import typing
from pathlib import Path

import yaml
from common import _cli, logged_seconds, markdown_table, train, training_arguments, write_section

from recsys_mtl.config.schema import BalancingConfig
from recsys_mtl.data.synthetic import PRESETS, GeneratorSpec, generate

log = logging.getLogger("balancing_study")
STRATEGIES: tuple[str, ...] = typing.get_args(BalancingConfig.model_fields["strategy"].annotation)
OBJECTIVES = PRESETS["all"]
TASK_CORR = -0.8
LOUD = "watch_time"


def headline(task: dict) -> str:
    """Entire-space AUC for binary tasks, XAUC for the others (as objectives.py)."""
    return "auc" if task.get("type", "binary") == "binary" else "xauc"


def loss_at_init(config: Path, tasks: list[dict], out: Path) -> dict[str, float]:
    """`recsys-mtl validate-data --split train` of the task list: each task's loss at initialisation."""
    if not (out / "summary.json").exists():
        _cli(["validate-data", "--config", str(config), "--split", "train", "--out", str(out), f"tasks={json.dumps(tasks)}"])
    return json.loads((out / "summary.json").read_text())["train"]["loss_at_init"]


def ratio(losses: dict[str, float]) -> float:
    """The loud task's loss over the median of the others' (the measure validate-data warns on)."""
    return losses[LOUD] / statistics.median(v for k, v in losses.items() if k != LOUD)


def with_scale(tasks: list[dict], scale: float) -> list[dict]:
    """The generated task list with watch time as a squared error on scale × seconds."""
    return [{"name": LOUD, "type": "regression", "scale": scale} if t["name"] == LOUD else t for t in tasks]


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    half = (max(values) - min(values)) / 2
    return f"{statistics.mean(values):.4f}" + (f" ± {half:.4f}" if len(values) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the training runs")
    parser.add_argument("--test-fraction", type=float, default=0.35, help="share of the rows in the test split")
    parser.add_argument("--loss-ratio", type=float, default=100.0, help="watch time's initial loss over the others' median")
    args = training_arguments(parser, rows=400_000, nproc=1)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    values: dict[tuple[str, str], list[float]] = {}  # (strategy or "oracle", task) -> metric per seed
    runs: dict[str, list[dict]] = {}
    errors: dict[str, str] = {}
    ratios: list[float] = []
    oracle_seeds: set[int] = set()  # the seeds whose oracle values are in `values`
    scale = math.nan
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for seed in args.seeds:
            data = work / f"data_all_corr{TASK_CORR:+.1f}_seed{seed}"
            if not (data / "config.yaml").exists():
                spec = GeneratorSpec(rows=args.rows, seed=seed, objectives=OBJECTIVES, task_corr=TASK_CORR, test_fraction=args.test_fraction)
                generate(data, spec, overwrite=True)
            generated = yaml.safe_load((data / "config.yaml").read_text())["tasks"]
            test_rows = round(args.rows * args.test_fraction)
            if math.isnan(scale):  # from the first seed's train split, then the same for every run
                at_one = loss_at_init(data / "config.yaml", with_scale(generated, 1.0), work / f"validate_seed{seed}_scale1")
                scale = float(f"{math.sqrt(args.loss_ratio / ratio(at_one)):.2g}")
                log.info("watch_time loss at scale 1: %.4g (%.0fx the median); scale %.2g", at_one[LOUD], ratio(at_one), scale)
            tasks = with_scale(generated, scale)
            measured = loss_at_init(data / "config.yaml", tasks, work / f"validate_seed{seed}_scale{scale:g}")
            ratios.append(ratio(measured))
            init_losses = measured
            log.info("seed %d: watch_time initial loss %.4g = %.1fx the others' median", seed, measured[LOUD], ratios[-1])
            base = [f"train.seed={seed}", f"data.seed={seed}", f"tasks={json.dumps(tasks)}"]
            for strategy in STRATEGIES:
                out = work / f"run_seed{seed}_scale{scale:g}_{strategy}"
                try:
                    run = train(data / "config.yaml", out, [*base, f"train.balancing.strategy={strategy}"], args.nproc)
                except RuntimeError as exc:
                    lines = [line for line in str(exc).splitlines() if line.strip()]
                    errors[strategy] = lines[-1].strip() if lines else str(exc)
                    log.warning("seed %d %s failed: %s", seed, strategy, errors[strategy])
                    continue
                runs.setdefault(strategy, []).append(run)
                metrics = run["metrics"]["metrics"]
                for t in tasks:
                    values.setdefault((strategy, t["name"]), []).append(metrics[t["name"]][headline(t)])
                    if seed not in oracle_seeds:
                        values.setdefault(("oracle", t["name"]), []).append(metrics[t["name"]][f"oracle_{headline(t)}"])
                oracle_seeds.add(seed)
                log.info("seed %d %-11s %s (%.0f s)", seed, strategy,
                         {t["name"]: round(values[(strategy, t["name"])][-1], 4) for t in tasks}, time.perf_counter() - start)

    names = [t["name"] for t in tasks]
    header = ["strategy", *(f"{n} {headline(t)}" for n, t in zip(names, tasks, strict=True)), f"final {LOUD} weight", "train s / run"]

    def final_weight(strategy: str) -> str:
        last = [next(rec for rec in reversed(r["log"]) if rec["event"] == "train") for r in runs[strategy]]
        return f"{statistics.mean(rec['task_weights'][LOUD] for rec in last):.3g}"

    rows = []
    for strategy in STRATEGIES:
        if strategy not in runs:
            rows.append([strategy, *(["failed"] * len(names)), "–", "–"])
            continue
        seconds = logged_seconds(runs[strategy]) / len(runs[strategy])
        rows.append([strategy, *(cell(values[(strategy, n)]) for n in names), final_weight(strategy), f"{seconds:.0f}"])
    rows.append(["oracle", *(cell(values.get(("oracle", n), [])) for n in names), "–", "–"])
    table = markdown_table(header, rows)

    # differences from fixed: mean of the per-seed paired differences; marked when the ranges do not overlap
    verdicts: dict[str, tuple[list[str], list[str]]] = {}
    diff_rows = []
    for strategy in STRATEGIES:
        if strategy == "fixed" or strategy not in runs or "fixed" not in runs:
            continue
        helped, hurt, cells = [], [], []
        for n in names:
            s, f = values[(strategy, n)], values[("fixed", n)]
            diff = statistics.mean(a - b for a, b in zip(s, f, strict=True))
            mark = ""
            if len(s) > 1 and min(s) > max(f):
                helped.append(n)
                mark = " ▲"
            elif len(s) > 1 and max(s) < min(f):
                hurt.append(n)
                mark = " ▼"
            cells.append(f"{diff:+.4f}{mark}")
        verdicts[strategy] = (helped, hurt)
        diff_rows.append([strategy, *cells])
    diff_table = markdown_table(["strategy − fixed", *names], diff_rows)

    def verdict(strategy: str) -> str:
        helped, hurt = verdicts[strategy]
        if not helped and not hurt:
            return f"- **{strategy}**: nothing beyond the seed spread."
        parts = ([f"helps {', '.join(helped)}"] if helped else []) + ([f"hurts {', '.join(hurt)}"] if hurt else [])
        return f"- **{strategy}**: {'; '.join(parts)} (beyond the seed spread); the other tasks within it."

    reading = "\n".join(verdict(s) for s in verdicts)
    failures = "\n".join(f"- **{s}** failed: `{e}`" for s, e in errors.items())
    steps = runs[next(iter(runs))][0]["metrics"]["steps"] if runs else 0
    command = (
        f"python bench/experiments/balancing_study.py --rows {args.rows} --test-fraction {args.test_fraction} "
        f"--seeds {' '.join(map(str, args.seeds))} --nproc {args.nproc}" + (f" --threads {args.threads}" if args.threads else "")
    )
    all_runs = [r for rs in runs.values() for r in rs]
    ratio_text = " / ".join(f"{r:.0f}×" for r in ratios)
    losses_text = ", ".join(f"{k} {v:.3g}" for k, v in init_losses.items())
    write_section("balancing_study", f"""
## Every balancing strategy with a conflicting objective and a 100× loss

Command: `{command}` (CPU; {logged_seconds(all_runs):.0f} s of training in all, as logged; {time.perf_counter() - start:.0f} s wall).

Setup: `recsys-mtl generate --rows {args.rows:,} --objectives all --task-corr {TASK_CORR} --test-fraction
{args.test_fraction} --seed S` ({args.rows - test_rows:,} train, {test_rows:,} test rows): click; conversion,
like, follow, finish after click; share; watch time. The conflicting objective is conversion, whose
conditional logit is {TASK_CORR} · z_click + {math.sqrt(1 - TASK_CORR**2):.1f} · z_indep (follow's
-0.6 · z_click conflicts too, more mildly). The loud objective is watch time as squared error on
seconds, `{{name: watch_time, type: regression, scale: {scale:g}}}`: its loss at initialisation
(`validate-data`, train split) is {ratio_text} the median of the other tasks' (seed
{" / ".join(map(str, args.seeds))}; last seed: {losses_text}). One epoch ({steps} steps) of
`recsys-mtl train --nproc {args.nproc}` with the generated config (MMoE, 4 experts, batch 512) for
every strategy, every `train.balancing.*` key at its default, seeds {", ".join(map(str, args.seeds))}
(data and model). Cells: test split, mean ± half-range over the seeds; binary tasks on the entire-space
`auc` (a funnel stage's p(click) × p(stage | click) against its label on every impression), watch time
on `xauc`; the oracle row scores the generator's true values the same way. "final watch_time weight":
the task weight logged at the last step (1 where a strategy does not reweight the losses).

{table}

Difference from `fixed` (mean of the per-seed paired differences); ▲ / ▼ where the strategy's range over
the seeds lies wholly above / below fixed's (beyond the seed spread):

{diff_table}

{reading}
{failures}
""")


if __name__ == "__main__":
    main()
