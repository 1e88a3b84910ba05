"""ESMM (Ma et al., "Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click
Conversion Rate", SIGIR 2018) against the click-only CVR baseline on the synthetic funnel.

Three models from the shipped configs, with the same MMoE backbone, features and optimiser:
`configs/models/mmoe_esmm.yaml` (ESMM: `{name: conversion, after: click}`, p(conversion | click)
learned over all impressions through p(click) × p(conversion | click)); `configs/models/cvr_click_only.yaml`
(click + `{name: cvr, label: conversion, where: click}`, a CVR head trained on clicked rows only,
sharing embeddings and backbone with the click task); and the same with the CVR task alone (the
paper's BASE: a CVR model that never sees an unclicked impression; the click task stays in the list
with `weight: 0`, since `where: click` needs it, and trains nothing). Trained by `recsys-mtl train` on
data from `recsys-mtl generate` at several `--task-corr` values (how much the conversion signal shares
with the click signal). Reported on the test split:

* CVR AUC, clicked: the classic evaluation, on the population the baseline trains on
  (ESMM: `conversion.conditional_auc`; click-only: `cvr.auc`);
* CVR AUC, entire space: the conditional output against conversion over every impression (the
  paper's argument: pCVR is served on every impression, not only on clicked ones)
  (`conversion.conditional_auc_entire_space`; `cvr.auc_entire_space`);
* CVR AUC, counterfactual: the conditional output over every impression against the oracle
  p(conversion | click), which the generator knows (soft labels): the space the CVR model is served on
  (`conversion.conditional_auc_counterfactual`; `cvr.auc_counterfactual`);
* CTCVR AUC: p(click) × p(conversion | click) against click-and-convert over every impression
  (ESMM: `conversion.auc`; click-only + click task: its `click` × `cvr` outputs from `recsys-mtl score`);
with the oracle's value of each beside it.

    python bench/experiments/esmm_funnel.py [--rows 500000] [--task-corrs 0.2 0.8] [--seeds 0 1] [--nproc 2]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import (  # noqa: E402
    FIGURES,
    ROOT,
    logged_seconds,
    markdown_table,
    score,
    train,
    training_arguments,
    write_section,
)

from recsys_mtl.data.synthetic import GeneratorSpec, generate  # noqa: E402
from recsys_mtl.metrics.ranking import auc  # noqa: E402

log = logging.getLogger("esmm_funnel")
CLICK_ONLY_ALONE = [
    "tasks=[{name: click, weight: 0}, {name: cvr, label: conversion, where: click}]", "ranking.terms={cvr: 1.0}",
]
# model -> (shipped config, extra overrides, the task whose metrics hold its CVR)
MODELS = {
    "ESMM": ("configs/models/mmoe_esmm.yaml", [], "conversion"),
    "click-only CVR + CTR": ("configs/models/cvr_click_only.yaml", [], "cvr"),
    "click-only CVR alone": ("configs/models/cvr_click_only.yaml", CLICK_ONLY_ALONE, "cvr"),
}
METRICS = [
    ("clicked", "CVR AUC, clicked"), ("entire", "CVR AUC, entire space"), ("counterfactual", "CVR AUC, counterfactual"),
    ("ctcvr", "CTCVR AUC"),
]
# this experiment's key -> the metric name in metrics.json, for a funnel stage (ESMM) and a `where` task
FUNNEL = {
    "clicked": "conditional_auc", "entire": "conditional_auc_entire_space", "counterfactual": "conditional_auc_counterfactual",
    "ctcvr": "auc",
}
WHERE = {"clicked": "auc", "entire": "auc_entire_space", "counterfactual": "auc_counterfactual"}


def measured(run: dict, model: str, test: Path, scores: Path) -> dict[str, float]:
    """This experiment's numbers (and the oracle's, as ``oracle_<key>``) from a run's metrics.json; the
    CTCVR AUC of the click-only model with a trained click task is that of its click × cvr outputs."""
    task = MODELS[model][2]
    m = run["metrics"]["metrics"][task]
    names = FUNNEL if task == "conversion" else WHERE
    out = {k: m[name] for k, name in names.items() if name in m}
    out.update({f"oracle_{k}": m[f"oracle_{name}"] for k, name in names.items() if f"oracle_{name}" in m})
    if model == "click-only CVR + CTR":
        cols = score(run["dir"], test, scores, ["click", "conversion"])
        out["ctcvr"] = auc(cols["pred_click"] * cols["pred_cvr"], cols["click"] * cols["conversion"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task-corrs", type=float, nargs="+", default=[0.2, 0.8])
    args = training_arguments(parser)
    start = time.perf_counter()
    results: dict[tuple[float, str], list[dict[str, float]]] = {}
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for corr in args.task_corrs:
            for seed in args.seeds:
                data = work / f"data_corr{corr}_seed{seed}"
                if not (data / "config.yaml").exists():
                    generate(data, GeneratorSpec(rows=args.rows, task_corr=corr, seed=seed), overwrite=True)
                for i, (model, (config, extra, _)) in enumerate(MODELS.items()):
                    out = work / f"run_corr{corr}_seed{seed}_model{i}"
                    overrides = [
                        f"data.train={data / 'train'}", f"data.eval={data / 'test'}", f"train.seed={seed}", f"data.seed={seed}", *extra,
                    ]
                    run = {**train(ROOT / config, out, overrides, args.nproc), "dir": out}
                    runs.append(run)
                    results.setdefault((corr, model), []).append(measured(run, model, data / "test", out / "test_scores.parquet"))
                    log.info("task_corr %.1f seed %d %s: %s (%.0f s)", corr, seed, model, results[(corr, model)][-1], time.perf_counter() - start)

    def mean(corr: float, model: str, key: str) -> float:
        values = [r[key] for r in results[(corr, model)] if key in r]
        return statistics.mean(values) if values else math.nan

    rows = []
    for corr in args.task_corrs:
        for model in MODELS:
            rows.append([f"{corr:.1f}", model, *(mean(corr, model, k) for k, _ in METRICS)])
        rows.append([f"{corr:.1f}", "oracle", *(mean(corr, "ESMM", f"oracle_{k}") for k, _ in METRICS)])
    table = markdown_table(["task corr.", "model", *(label for _, label in METRICS)], rows)

    FIGURES.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(args.task_corrs), figsize=(5.5 * len(args.task_corrs), 3.6), sharey=True)
    axes = axes if len(args.task_corrs) > 1 else [axes]
    width = 0.8 / len(MODELS)
    for ax, corr in zip(axes, args.task_corrs, strict=True):
        for i, model in enumerate(MODELS):
            values = [mean(corr, model, k) for k, _ in METRICS]
            ax.bar([j + (i - (len(MODELS) - 1) / 2) * width for j in range(len(METRICS))], values, width, label=model)
        ax.set_xticks(range(len(METRICS)), [label.replace("CVR AUC, ", "CVR ") for _, label in METRICS], fontsize=8)
        ax.set_title(f"task correlation {corr}")
        ax.set_ylim(0.5, 0.9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"AUC, mean of {len(args.seeds)} seeds")
    axes[-1].legend()
    fig.tight_layout()
    fig.savefig(FIGURES / "esmm_funnel.png", dpi=110)

    gap_lines = "\n".join(
        f"- task corr. {corr}, {baseline}: "
        + ", ".join(
            f"{label} {mean(corr, 'ESMM', k) - mean(corr, baseline, k):+.4f}"
            for k, label in METRICS if not math.isnan(mean(corr, baseline, k))
        )
        for corr in args.task_corrs for baseline in list(MODELS)[1:]
    )
    command = (
        f"python bench/experiments/esmm_funnel.py --rows {args.rows} --task-corrs {' '.join(map(str, args.task_corrs))} "
        f"--seeds {' '.join(map(str, args.seeds))} --nproc {args.nproc}"
    )
    write_section("esmm", f"""
## ESMM vs. the click-only CVR model (synthetic funnel)

Command: `{command}` (CPU; {logged_seconds(runs):.0f} s of training in all, as logged).

Setup: `recsys-mtl generate --rows {args.rows:,} --task-corr C --seed S` (90 % train / 10 % test), one
epoch of `recsys-mtl train --nproc {args.nproc}` per model with the shipped configs (MMoE backbone,
batch 512 per rank, the example config's optimiser), seeds {", ".join(map(str, args.seeds))} (data and
model). Models: ESMM = `{{name: conversion, after: click}}`; click-only CVR = `{{name: cvr, label:
conversion, where: click}}` beside the click task ("+ CTR") or with the click task at `weight: 0`
("alone"). Cells: AUC on the test split, mean over seeds; "oracle" scores with the generator's true
probabilities. Metric names: CVR AUC, clicked = `conversion.conditional_auc` (ESMM) / `cvr.auc`;
entire space = `conversion.conditional_auc_entire_space` / `cvr.auc_entire_space`;
counterfactual = `conversion.conditional_auc_counterfactual` / `cvr.auc_counterfactual`; CTCVR AUC =
`conversion.auc` (ESMM) / the AUC of the scored `click` × `cvr` outputs (click-only + CTR).

{table}

ESMM minus each baseline:
{gap_lines}

![ESMM vs click-only](experiments/esmm_funnel.png)
""")


if __name__ == "__main__":
    main()
