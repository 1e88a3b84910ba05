"""``recsys-mtl score``: batch scoring to Parquet, input order kept, named columns carried through: one
column per output of the model (``<task>`` per task, ``<task>_given_<after>`` per funnel stage) and
``score``, the same numbers the server answers for the same rows."""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys_mtl.cli.common import add_checkpoint_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score", help="score a Parquet dataset with a trained model (batch, streaming)",
        description="Write one column per model output: <task> for every task (a probability for binary tasks, the "
        "expected label value in the label column's units for regression / weighted-logistic ones), "
        "<task>_given_<after> for funnel stages (the conditional probability), and the ranking score.",
    )
    p.add_argument("--model", type=Path, required=True, help="model root or version (the --out of export), or a training run directory")
    add_checkpoint_arg(p)
    p.add_argument("--data", required=True, help="Parquet directory or file with the feature columns")
    p.add_argument("--out", type=Path, required=True, help="output Parquet file")
    p.add_argument("--keep", nargs="*", default=[], metavar="COL", help="input columns to carry through (e.g. row_id)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per model call (default: the run's)")
    p.add_argument("--prefix", default="", help="prefix of the output columns (e.g. pred_, when --keep carries label columns)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recsys_mtl.report.score import score_to_parquet

    rows = score_to_parquet(args.model, args.data, args.out, args.keep, args.batch_size, args.prefix, args.checkpoint)
    print(f"scored {rows:,} rows -> {args.out}")
    return 0
