"""``recsys-mtl export``: the serving artifact of a training run (SPEC §6)."""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys_mtl.cli.common import add_checkpoint_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a versioned serving artifact from a training run")
    p.add_argument("--run", dest="run_dir", type=Path, required=True, help="training run directory (the --out of train)")
    p.add_argument("--out", type=Path, required=True, help="model root: the version is written to OUT/VERSION")
    p.add_argument(
        "--version", default=None,
        help="version name (default: v<UTC date>-<time>); a root's newest version is the greatest name, runs of "
        "digits compared as numbers (v9 < v10), so pick names that sort in publication order",
    )
    add_checkpoint_arg(p)
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8 embedding tables (CPU serving)")
    p.add_argument(
        "--sample-data", default=None,
        help="held-out Parquet for the int8 check: each task's AUC (XAUC for non-binary tasks) with float and "
        "int8 embeddings (default: the run's eval split)",
    )
    p.add_argument("--sample-rows", type=int, default=50_000, help="rows of the int8 check")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="change the serving score formula over the model's output names (only ranking.* may change), e.g. "
        "ranking.combine=sum 'ranking.terms={click: 1, like: 0.5}', or ranking.terms.like=2 to change one term",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recsys_mtl.export.export import export_run

    path, meta = export_run(
        args.run_dir, args.out, version=args.version, quantize=args.quantize, sample_data=args.sample_data,
        sample_rows=args.sample_rows, overrides=args.overrides,
        checkpoint=args.checkpoint,
    )
    print(f"model version {meta['version']} -> {path}")
    source, metrics = meta["source"], meta["metrics"]
    best = source.get("best")
    chosen = f", best {best['metric']} {best['value']:.4f}" if best else ""
    print(f"  from {source['run']} {source['checkpoint']} (written by {source['world_size']} rank(s){chosen})")
    if metrics is not None:
        aucs = ", ".join(f"{task} {m['auc']:.4f}" for task, m in metrics["tasks"].items() if isinstance(m, dict) and "auc" in m)
        print(f"  metrics from {metrics['source']}" + (f": AUC {aucs}" if aucs else ""))
    quant = meta["quantization"]
    if quant is not None:
        print(f"int8 embeddings, checked on {quant['rows']:,} held-out rows of {quant['data']}:")
        width = max(map(len, [*quant["tasks"], *quant["outputs"]]))
        print("  per task (float -> int8):")
        for task, entry in quant["tasks"].items():
            name = entry["metric"].upper()
            if "change" in entry:
                print(f"    {task:<{width}} {name} {entry['float']:.4f} -> {entry['int8']:.4f} ({entry['change']:+.5f})")
            else:
                print(f"    {task:<{width}} {name} undefined: one label value on its {entry['rows']:,} rows")
        print("  per output:")
        for output, entry in quant["outputs"].items():
            print(
                f"    {output:<{width}} max |diff| {entry['max_abs_diff']:.2e}, mean relative diff {entry['mean_rel_diff']:.2e}"
            )
    return 0
