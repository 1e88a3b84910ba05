"""``recsys-mtl validate-data``: stream a split through the feature path and report what it holds.

Checks every file's columns and types, every task's labels (a single class or too many impossible rows
stop it with exit 2 before the full pass), computes the dense statistics of the train split (saved for
training and serving), reads every row as training would, and prints rows, batches, ids seen per
feature, label rates, bad-row counts and the reading speed. The first stage of ``pipeline``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from recsys_mtl.cli.common import add_config_args, config_from_args
from recsys_mtl.config import Config, save_config
from recsys_mtl.data.label_check import require_trainable_labels
from recsys_mtl.data.reader import BatchReader
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.data.summary import SplitSummary
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor
from recsys_mtl.features.vocab import VOCAB_FILE, Vocabularies, vocab_features
from recsys_mtl.progress import Progress

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate-data", help="check a dataset against the feature config and summarise it")
    add_config_args(p)
    p.add_argument("--split", choices=["train", "eval", "both"], default="both")
    p.add_argument("--out", type=Path, help="write summary.json, dense_stats.json, config.yaml (and vocab.parquet) here")
    p.set_defaults(run=run)


def scan_split(config: Config, split: str, processor: FeatureProcessor) -> dict[str, Any]:
    """Read one split in order (no shuffle) and summarise it."""
    reader = BatchReader.from_config(config, split, processor, shuffle=False)
    summary = SplitSummary(config)
    start = time.perf_counter()
    with Progress(reader.source.num_rows, f"validate {split}") as progress:
        for batch in reader:
            before = summary.rows
            summary.update(batch)
            progress.update(summary.rows - before)
    seconds = time.perf_counter() - start
    out = summary.to_dict()
    out.update(
        files=len(reader.source.files),
        seconds=seconds,
        rows_per_s=reader.quality.rows_read / seconds,
        quality=reader.quality.to_dict(),
    )
    return out


def format_summary(split: str, s: dict[str, Any]) -> str:
    q = s["quality"]
    lines = [
        f"== {split}: {s['rows']:,} rows kept of {q['rows_read']:,} read, {s['batches']:,} batches, "
        f"{s['files']} files, {s['rows_per_s']:,.0f} rows/s",
        "  mean label per task (on its space): " + ", ".join(f"{k} {v:.4g}" for k, v in s["labels"].items()),
        "  loss at initialisation: " + ", ".join(f"{k} {v:.4g}" for k, v in s["loss_at_init"].items()),
        f"  dropped rows: {q['rows_dropped']:,}"
        + (" (" + ", ".join(f"{k}: {v:,}" for k, v in q["dropped_by_reason"].items()) + ")" if q["rows_dropped"] else ""),
    ]
    for key in ("null_ids", "out_of_range_ids", "filled_dense"):
        if q[key]:
            lines.append(f"  {key}: " + ", ".join(f"{k}: {v:,}" for k, v in q[key].items()))
    if q["empty_files"]:
        lines.append(f"  empty files skipped: {len(q['empty_files'])}")
    lines.append(f"  {'feature':<18}{'buckets seen':>14}{'of':>10}{'ids/row':>10}")
    for name, f in s["features"].items():
        lines.append(f"  {name:<18}{f['buckets_seen']:>14,}{f['num_embeddings']:>10,}{f['ids_per_row']:>10.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    train = ParquetSource(config.data.train)
    stats = DenseStats.of_source(config.features.dense, train)
    vocabs = Vocabularies.of_source(vocab_features(config), train) if vocab_features(config) else None
    processor = FeatureProcessor(config, stats, vocabs=vocabs)
    splits = ["train", "eval"] if args.split == "both" else [args.split]
    if config.data.eval is None and "eval" in splits:
        splits.remove("eval")
        log.warning("data.eval is not set; only the train split is checked")
    # the labels first (one pass over their columns): a task mapped to the wrong column fails in seconds
    require_trainable_labels(config, splits)
    results = {split: scan_split(config, split, processor) for split in splits}
    for split, s in results.items():
        print(format_summary(split, s))
        for warning in s["warnings"]:
            log.warning("%s split: %s", split, warning)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
        stats.save(args.out / "dense_stats.json")
        save_config(config, args.out / "config.yaml")
        if vocabs is not None:
            vocabs.save(args.out / VOCAB_FILE)
        print(f"wrote {args.out}/summary.json, dense_stats.json, config.yaml" + (f", {VOCAB_FILE}" if vocabs is not None else ""))
    return 0
