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
    p.add_argument("--rows", type=int, default=GeneratorSpec.rows, help="total rows (train + test), per day")
    p.add_argument("--seed", type=int, default=GeneratorSpec.seed)
    p.add_argument(
        "--task-corr", type=float, default=GeneratorSpec.task_corr,
        help="correlation of the click and conversion signals, in [-1, 1]",
    )
    p.add_argument("--test-fraction", type=float, default=GeneratorSpec.test_fraction)
    p.add_argument("--objectives", default="classic", metavar="LIST_OR_PRESET", help=_OBJECTIVES_HELP)
    p.add_argument(
        "--days", type=int, default=GeneratorSpec.days,
        help="consecutive days to write as DIR/day_1 .. DIR/day_N, each with train/, test/ and config.yaml "
        "(default 1: DIR/train, DIR/test)",
    )
    p.add_argument(
        "--new-users-per-day", type=float, default=GeneratorSpec.new_users_per_day, metavar="SHARE",
        help="users added each day after the first, as a share of the day-1 users (default 0.05)",
    )
    p.add_argument(
        "--new-items-per-day", type=float, default=GeneratorSpec.new_items_per_day, metavar="SHARE",
        help="items added each day after the first, as a share of the day-1 items (default 0.1)",
    )
    p.add_argument(
        "--popularity-drift", type=float, default=GeneratorSpec.popularity_drift, metavar="SHARE",
        help="share of the items whose popularity ranks are reshuffled each day, in [0, 1] (default 0.1)",
    )
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace the train and test directories to be written if they hold files",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        objectives = parse_objectives(args.objectives)
    except ValueError as exc:
        raise ConfigError(f"--objectives {args.objectives!r}: {exc}") from None
    try:
        spec = GeneratorSpec(
            rows=args.rows, seed=args.seed, task_corr=args.task_corr, test_fraction=args.test_fraction,
            objectives=objectives, days=args.days, new_users_per_day=args.new_users_per_day,
            new_items_per_day=args.new_items_per_day, popularity_drift=args.popularity_drift,
        )
    except ValueError as exc:
        raise ConfigError(f"--{exc}" if str(exc).startswith("objectives") else str(exc)) from None
    try:
        s = generate(args.out, spec, overwrite=args.overwrite)
    except FileExistsError as exc:
        raise ConfigError(f"{exc} (pass --overwrite to replace it)") from None
    over = f" over {len(s.days)} days" if s.days else ""
    print(
        f"wrote {s.train_rows:,} train rows ({s.train_files} files) and {s.test_rows:,} test rows "
        f"({s.test_files} files) to {args.out}{over} in {s.seconds:.1f} s"
    )
    for day in s.days:
        print(
            f"  day_{day.day}: {day.train_rows:,} train + {day.test_rows:,} test rows; "
            f"{day.users:,} users ({day.new_users:,} new, {day.new_user_share:.1%} of rows), "
            f"{day.items:,} items ({day.new_items:,} new, {day.new_item_share:.1%} of rows)"
            + "; rates " + ", ".join(f"{name} {rate:.4g}" for name, rate in day.rates.items())
        )
    for line in s.rate_lines():
        print(f"  {line}")
    where = " (day_1's data; day_N/config.yaml reads day N)" if s.days else ""
    print(f"  feature config: {s.config_path}{where}")
    return 0

