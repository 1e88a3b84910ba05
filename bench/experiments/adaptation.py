"""Adapting a trained model (issue 18, item 4), two experiments; one process, a small MMoE
(`model.hidden_dims=[64,32]`), one epoch per run, the same train and test rows for every arm. Each prints
a Markdown table and writes the results to ``--out`` as JSON.

``--experiment objective``: on the generator's six-objective data, a model trained on five objectives
(all but share) gets the sixth by (a) MTLoRA adapters serving share only plus its new tower (`adapt:`),
(b) full fine-tuning of all six from the five-objective model (`--init-from`), (c) training all six from
scratch. Reported: share's AUC, the old tasks' metrics before (the five-objective model) and after,
trainable parameters (dense; embedding rows counted apart) and the wall time of each `recsys-mtl train`.

``--experiment surface`` (``surfaces.py``): a model trained on surface A adapted to A + a second surface
B whose label rates differ, by per-domain adapters, one shared LoRA, or full fine-tuning; AUC per task
per surface.

    python bench/experiments/adaptation.py [--experiment objective|surface] [--rows 200000] [--seed 0] [--work DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.experiments.daily_stream import cli
from recsys_mtl.config import load_config
from recsys_mtl.models.builder import build_train_module

OVERRIDES = ["model.hidden_dims=[64,32]", "train.epochs=1", "ranking.terms=null"]
OLD = "[{name: click}, {name: like, after: click}, {name: follow, after: click}, {name: finish, after: click}, {name: watch_time, type: weighted_logistic}]"
ALL = OLD[:-1] + ", {name: share}]"
ADAPT = "adapt={kind: mtlora, rank: 8, tasks: [share], layers: [backbone, dense_arch]}"
METRICS = (("click", "auc"), ("like", "auc"), ("follow", "auc"), ("finish", "auc"), ("watch_time", "xauc"), ("share", "auc"))
ARMS = {"base": "5 objectives (before)", "a": "(a) adapters + share tower", "b": "(b) full fine-tune", "c": "(c) 6 from scratch"}


def trainable(run: Path) -> tuple[int, int]:
    """(dense parameters that train, embedding parameters that train) of the run's model."""
    config = load_config(run / "config.yaml")
    module = build_train_module(config, "cpu")
    dense = sum(p.numel() for n, p in module.named_parameters() if p.requires_grad and ".ebc." not in n)
    tables = sum(p.numel() for n, p in module.named_parameters() if ".ebc." in n)
    return dense, 0 if config.adapt is not None and config.adapt.freeze_embeddings else tables


def run_arm(data: Path, runs: Path, arm: str) -> dict:
    out = runs / arm
    tasks = f"tasks={OLD if arm == 'base' else ALL}"
    extra = {"base": [], "a": ["--init-from", str(runs / "base"), ADAPT], "b": ["--init-from", str(runs / "base")], "c": []}[arm]
    if not (out / "metrics.json").exists():
        seconds = cli("train", "--config", str(data / "config.yaml"), "--out", str(out), "--nproc", "1", *extra, tasks, *OVERRIDES)
        (out / "wall_seconds").write_text(f"{seconds:.3f}\n")
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    dense, tables = trainable(out)
    return {"arm": arm, **{t: metrics[t][m] for t, m in METRICS if t in metrics}, "dense_trainable": dense,
            "embedding_trainable": tables, "seconds": float((out / "wall_seconds").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows generated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep data and runs here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("adaptation.json"), help="results (JSON)")
    parser.add_argument("--experiment", choices=["objective", "surface"], default="objective")
    args = parser.parse_args()
    if args.experiment == "surface":
        from bench.experiments import surfaces  # it reads this module's settings

        surfaces.main(args.rows, args.seed, args.work, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        data, runs = work / "data", work / "runs"
        if not (data / "config.yaml").is_file():
            cli("generate", "--out", str(data), "--rows", str(args.rows), "--objectives", "video", "--seed", str(args.seed))
        runs.mkdir(parents=True, exist_ok=True)
        results = []
        for arm in ARMS:
            results.append(run_arm(data, runs, arm))
            print(f"{arm}: {results[-1]}", file=sys.stderr, flush=True)
    names = [f"{t} {m}" for t, m in METRICS]
    header = ["model", *names, "dense params trained", "embedding params trained", "train wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [ARMS[r["arm"]], *(f"{r[t]:.4f}" if t in r else "–" for t, _ in METRICS),
                 f"{r['dense_trainable']:,}", f"{r['embedding_trainable']:,}", f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    args.out.write_text(json.dumps({"rows": args.rows, "seed": args.seed, "overrides": OVERRIDES, "adapt": ADAPT,
                                    "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
