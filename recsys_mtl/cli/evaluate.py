"""``recsys-mtl evaluate``: the offline evaluation report of a training run on a dataset (SPEC §5)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from recsys_mtl.cli.common import add_checkpoint_arg, relaunch
from recsys_mtl.config import ConfigError
from recsys_mtl.train.distributed import under_launcher


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="offline evaluation report of a run (HTML, Markdown, JSON, PNG)")
    p.add_argument("--run", dest="run_dir", type=Path, required=True, help="training run directory (the --out of train), or a model version or root (the --out of export)")
    add_checkpoint_arg(p)
    p.add_argument("--data", required=True, help="Parquet directory or file with the same schema as training")
    p.add_argument("--out", type=Path, default=None, help="report directory (default: RUN/report for a training run)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per batch (default: the run's data.batch_size)")
    p.add_argument("--nproc", type=int, default=1, help="local processes, each evaluating its share of the rows")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.nproc > 1 and not under_launcher():
        return relaunch(args.nproc)
    from recsys_mtl.report.evaluate import evaluate_run
    from recsys_mtl.report.headline import headline_text
    from recsys_mtl.train.distributed import init_distributed, shutdown

    out = args.out
    if out is None:
        if not (args.run_dir / "checkpoints").is_dir():
            raise ConfigError(f"{args.run_dir} is a model, not a training run: pass --out for the report")
        out = args.run_dir / "report"
    env = init_distributed()
    try:
        report = evaluate_run(args.run_dir, args.data, out, env, args.batch_size, args.checkpoint)
    except BaseException:
        shutdown(failed=True)
        raise
    shutdown()
    if os.environ.get("RANK", "0") == "0":
        # the headline metrics of each task by its type and place in the task graph; every metric is in
        # the report
        print(headline_text(report))
        print(f"report: {out / 'report.html'} ({report['rows']:,} rows; every metric in {out / 'metrics.json'})")
    return 0
