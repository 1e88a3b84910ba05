"""``recsys-mtl compare REPORT_A REPORT_B``: two evaluation reports side by side, with deltas."""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys_mtl.errors import DataError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="two evaluation reports side by side, with deltas and AUC tests")
    p.add_argument("report_a", type=Path, help="report directory (or its metrics.json): the baseline")
    p.add_argument("report_b", type=Path, help="report directory (or its metrics.json): the candidate")
    p.add_argument("--html", type=Path, default=None, help="also write the comparison as an HTML page here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recsys_mtl.report.compare import compare, load_report, to_html, to_text

    try:
        a, b = load_report(args.report_a), load_report(args.report_b)
    except FileNotFoundError as exc:
        raise DataError(str(exc)) from exc
    rows = compare(a, b)
    print(to_text(rows, str(args.report_a), str(args.report_b)))
    if args.html:
        args.html.write_text(to_html(rows, str(args.report_a), str(args.report_b)))
        print(f"html: {args.html}")
    return 0
