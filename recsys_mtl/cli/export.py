"""``recsys-mtl export``: the serving artifact of a training run (SPEC §6)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a versioned serving artifact from a training run")
    p.add_argument("--run", dest="run_dir", type=Path, required=True, help="training run directory (the --out of train)")
    p.add_argument("--out", type=Path, required=True, help="model root: the version is written to OUT/VERSION")
    p.add_argument("--version", default=None, help="version name (default: v<UTC date>-<time>)")
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8 embedding tables (CPU serving)")
    p.add_argument("--sample-data", default=None, help="held-out Parquet for the int8 AUC check (default: the run's eval split)")
    p.add_argument("--sample-rows", type=int, default=50_000, help="rows of the int8 AUC check")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="change the serving score formula, e.g. ranking.exponents.pctcvr=1 (only ranking.* may change)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recsys_mtl.export.export import export_run

    path, meta = export_run(
        args.run_dir, args.out, version=args.version, quantize=args.quantize, sample_data=args.sample_data,
        sample_rows=args.sample_rows, overrides=args.overrides,
    )
    print(f"model version {meta['version']} -> {path}")
    source, metrics = meta["source"], meta["metrics"]
    print(f"  from {source['run']} {source['checkpoint']} (written by {source['world_size']} rank(s))")
    if metrics is not None:
        ctr = metrics["tasks"].get("ctr", {})
        auc = f": CTR AUC {ctr['auc']:.4f}" if "auc" in ctr else ""
        print(f"  metrics from {metrics['source']}{auc}")
    quant = meta["quantization"]
    if quant is not None:
        print(f"int8 embeddings, checked on {quant['rows']:,} held-out rows of {quant['data']}:")
        for name, entry in quant["outputs"].items():
            line = f"  {name:<11} max |diff| {entry['max_abs_diff']:.2e}"
            if "auc_change" in entry:
                line += f"  AUC {entry['auc_float']:.4f} -> {entry['auc_int8']:.4f} ({entry['auc_change']:+.5f})"
            print(line)
    return 0
