"""``recsys-mtl train``: train on 1 process, ``--nproc N`` local processes, or inside an outer torchrun."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from recsys_mtl.cli.common import add_config_args, config_from_args, relaunch
from recsys_mtl.models.adapters import require_source
from recsys_mtl.train.distributed import under_launcher
from recsys_mtl.train.resume import check_out_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the multi-task model (sharded embeddings, DMP)")
    add_config_args(p)
    p.add_argument("--out", type=Path, default=Path("runs/latest"), help="run directory")
    p.add_argument("--nproc", type=int, default=1, help="local processes to launch through torch.distributed.run")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument(
        "--init-from", type=Path, default=None, metavar="RUN_OR_MODEL",
        help="warm start: begin from the weights of a training run, a model version or a model root (its newest "
        "version); tables and layers that changed start fresh (RUN/warm_start.json says what was kept); required "
        "with an adapt: section (only adapters and the towers of adapt.tasks train)",
    )
    p.set_defaults(run=run)


def format_result(result: dict[str, Any]) -> str:
    """Every task's metrics beside the oracle's (group counts stay in metrics.json)."""
    rows = [
        (task, name, value, metrics.get(f"oracle_{name}"))
        for task, metrics in result["metrics"].items()
        for name, value in metrics.items()
        if not name.startswith("oracle_") and not name.startswith("gauc_")
    ]
    tw = max([4, *(len(r[0]) for r in rows)]) + 2
    mw = max([6, *(len(r[1]) for r in rows)]) + 2
    lines = [f"{'task':<{tw}}{'metric':<{mw}}{'model':>10}{'oracle':>10}{'oracle-model':>14}"]
    for task, name, value, oracle in rows:
        gap = f"{oracle - value:>14.4f}" if oracle is not None else f"{'':>14}"
        shown = f"{oracle:>10.4f}" if oracle is not None else f"{'-':>10}"
        lines.append(f"{task:<{tw}}{name:<{mw}}{value:>10.4f}{shown}{gap}")
    rate = result["samples_per_s"]
    lines.append(f"{result['steps']} steps on {result['world_size']} rank(s)" + (f", {rate:,.0f} samples/s" if rate else ""))
    selected = result.get("selected")
    if selected:  # train.select: the metrics above are the best checkpoint's
        stop = ", stopped early" if selected["early_stop"] else ""
        lines.append(f"best {selected['metric']} {selected['value']:.4f} at step {selected['step']}: {selected['checkpoint']}{stop}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # validate before launching anything
    world_size = int(os.environ.get("WORLD_SIZE", args.nproc))  # under a launcher: its world
    check_out_dir(config, args.out, args.resume, world_size)  # and a refused --resume, before N processes say it
    require_source(config, args.init_from, args.resume)  # adapt: without --init-from
    if args.nproc > 1 and not under_launcher():
        return relaunch(args.nproc)
    from recsys_mtl.train.loop import train

    result = train(config, args.out, resume=args.resume, init_from=args.init_from)
    if os.environ.get("RANK", "0") == "0":
        print(format_result(result))
        print(f"run directory: {args.out} (metrics.json, train_log.jsonl, checkpoints/)")
    return 0

