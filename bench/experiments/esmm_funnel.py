"""ESMM (Ma et al., "Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click
Conversion Rate", SIGIR 2018) against the click-only CVR baseline on the synthetic funnel.

Three models from the shipped configs, with the same MMoE backbone, features and optimiser:
`configs/models/mmoe_esmm.yaml` (ESMM: CTR + CTCVR heads, pCVR learned over all impressions through
pCTCVR = pCTR × pCVR); `configs/models/cvr_click_only.yaml` (CTR + a CVR head trained on clicked rows
only, sharing embeddings and backbone with CTR); and the same with the CVR task alone (the paper's
BASE: a CVR model that never sees an unclicked impression). Trained by
`recsys-mtl train` on data from `recsys-mtl generate` at several `--task-corr` values (how much the
conversion signal shares with the click signal). Reported on the test split:

* CVR AUC, clicked rows: the classic evaluation, on the population the baseline trains on;
* CVR AUC, entire space: pCVR against click-and-convert over every impression (the paper's metric);
* CVR AUC, counterfactual: pCVR over every impression against the oracle p(convert | click), which
  the generator knows (soft labels): the space the CVR model is served on;
* CTCVR AUC: pCTR × pCVR against click-and-convert;
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
from common import FIGURES, ROOT, logged_seconds, markdown_table, train, training_arguments, write_section  # noqa: E402

from recsys_mtl.data.synthetic import GeneratorSpec, generate  # noqa: E402

log = logging.getLogger("esmm_funnel")
# model -> (shipped config, extra overrides, the task whose metrics hold its pCVR)
MODELS = {
    "ESMM": ("configs/models/mmoe_esmm.yaml", [], "ctcvr"),
    "click-only CVR + CTR": ("configs/models/cvr_click_only.yaml", [], "cvr"),
    "click-only CVR alone": ("configs/models/cvr_click_only.yaml", ["tasks=[{name: cvr, kind: cvr}]"], "cvr"),
}
METRICS = [
    ("cvr_auc_clicked", "CVR AUC, clicked"),
    ("cvr_auc_entire_space", "CVR AUC, entire space"),
    ("cvr_auc_counterfactual", "CVR AUC, counterfactual"),
    ("ctcvr_auc", "CTCVR AUC"),
]
ORACLE = {
    "cvr_auc_clicked": "oracle_cvr_auc_clicked",
    "cvr_auc_entire_space": "oracle_cvr_auc_entire_space",
    "cvr_auc_counterfactual": "oracle_cvr_auc_counterfactual",
    "ctcvr_auc": "oracle_auc",
}


def measured(metrics: dict, model: str) -> dict[str, float]:
    """This experiment's numbers from a run's metrics.json; CTCVR of the baseline is pCTR × pCVR."""
    m = metrics["metrics"][MODELS[model][2]]
    out = {k: m[k] for k, _ in METRICS if k in m}
    out["ctcvr_auc"] = m.get("auc", float("nan"))
    out.update({f"oracle_{k}": m[v] for k, v in ORACLE.items() if v in m})
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
                    overrides = [f"data.train={data / 'train'}", f"data.eval={data / 'test'}", f"train.seed={seed}", f"data.seed={seed}", *extra]
                    run = train(ROOT / config, out, overrides, args.nproc)
                    runs.append(run)
                    results.setdefault((corr, model), []).append(measured(run["metrics"], model))
                    log.info("task_corr %.1f seed %d %s: %s (%.0f s)", corr, seed, model, results[(corr, model)][-1], time.perf_counter() - start)

    def mean(corr: float, model: str, key: str) -> float:
        return statistics.mean(r[key] for r in results[(corr, model)] if key in r)

    rows = []
    for corr in args.task_corrs:
        for model in MODELS:
            rows.append([f"{corr:.1f}", model, *(mean(corr, model, k) for k, _ in METRICS)])
        rows.append([f"{corr:.1f}", "oracle", *(mean(corr, "ESMM", f"oracle_{k}") if f"oracle_{k}" in results[(corr, "ESMM")][0] else "–" for k, _ in METRICS)])
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
model). Cells: AUC on the test split, mean over seeds; "oracle" scores with the generator's true
probabilities.

{table}

ESMM minus each baseline:
{gap_lines}

![ESMM vs click-only](experiments/esmm_funnel.png)
""")


if __name__ == "__main__":
    main()
