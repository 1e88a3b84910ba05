"""``recsys-mtl generate``: synthetic impression logs with known true probabilities (SPEC §2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys_mtl.config import ConfigError
from recsys_mtl.data.synthetic import CATALOGUE, PRESETS, GeneratorSpec, generate, parse_objectives

_PRESET_LIST = "; ".join(f"{name}: {','.join(names)}" for name, names in PRESETS.items())
_OBJECTIVES_HELP = (
    f"label columns: a preset ({_PRESET_LIST}) or a comma list of {', '.join(CATALOGUE)} (default: classic)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="write synthetic train/ and test/ Parquet plus a feature config")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--rows", type=int, default=GeneratorSpec.rows, help="total rows (train + test)")
    p.add_argument("--seed", type=int, default=GeneratorSpec.seed)
    p.add_argument(
        "--task-corr", type=float, default=GeneratorSpec.task_corr,
        help="correlation of the click and conversion signals, in [-1, 1]",
    )
    p.add_argument("--test-fraction", type=float, default=GeneratorSpec.test_fraction)
    p.add_argument("--objectives", default="classic", metavar="LIST_OR_PRESET", help=_OBJECTIVES_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace DIR/train and DIR/test if they hold files")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        objectives = parse_objectives(args.objectives)
    except ValueError as exc:
        raise ConfigError(f"--objectives {args.objectives!r}: {exc}") from None
    try:
        spec = GeneratorSpec(
            rows=args.rows, seed=args.seed, task_corr=args.task_corr, test_fraction=args.test_fraction,
            objectives=objectives,
        )
    except ValueError as exc:
        raise ConfigError(f"--{exc}" if str(exc).startswith("objectives") else str(exc)) from None
    try:
        s = generate(args.out, spec, overwrite=args.overwrite)
    except FileExistsError as exc:
        raise ConfigError(f"{exc} (pass --overwrite to replace it)") from None
    print(
        f"wrote {s.train_rows:,} train rows ({s.train_files} files) and {s.test_rows:,} test rows "
        f"({s.test_files} files) to {args.out} in {s.seconds:.1f} s"
    )
    for line in s.rate_lines():
        print(f"  {line}")
    print(f"  feature config: {s.config_path}")
    return 0

