"""Part files, splits and `generate`: the generator's only writer.

Memory is bounded by `rows_per_file`: each part file is generated and written on its own from its own
random streams (`streams.part_rng`, `streams.label_rng`), with the latent tables and the calibration
shared by every file.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from recsys_mtl.data.synthetic.catalogue import CATALOGUE
from recsys_mtl.data.synthetic.config import feature_config, label_type, output_schema
from recsys_mtl.data.synthetic.latent import LatentTables, build_tables, sample_impressions, signals
from recsys_mtl.data.synthetic.objectives import Calibration, calibrate, draw_labels, oracles, truth
from recsys_mtl.data.synthetic.spec import GeneratorSpec
from recsys_mtl.data.synthetic.streams import TEST_SPLIT_ID, TRAIN_SPLIT_ID, label_rng, part_rng

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateSummary:
    """What `generate` wrote, with the realised rates over both splits.

    rates: per objective ``<name>`` (binary: the entire-space rate) and, for the objectives that need
    a click, ``<name>_given_click`` (binary: the rate on clicked rows; watch_time: the mean seconds on
    clicked rows).
    """

    train_rows: int
    test_rows: int
    train_files: int
    test_files: int
    rates: dict[str, float]
    seconds: float
    config_path: Path

    def rate_lines(self) -> list[str]:
        """One printable line per objective: its realised rate (and rate given click), or for watch
        time the mean seconds given click."""
        lines = []
        for name, obj in CATALOGUE.items():
            rate, given = self.rates.get(name), self.rates.get(f"{name}_given_click")
            if obj.kind == "watch_time" and given is not None:
                lines.append(f"{name:<12} mean {given:.1f} s given click")
            elif rate is not None:
                suffix = f"  ({given:.4f} given click)" if given is not None else ""
                lines.append(f"{name:<12} rate {rate:.4f}{suffix}")
        return lines


@dataclass(frozen=True)
class _PartCounts:
    """Label totals of one part file, for the summary: rows, clicks and each label column's sum."""

    rows: int
    clicks: int
    sums: dict[str, float]


def _part_table(
    tables: LatentTables,
    cal: Calibration,
    spec: GeneratorSpec,
    keys: tuple[int, int],
    first_row_id: int,
    n: int,
    with_oracle: bool,
) -> tuple[pa.Table, _PartCounts]:
    """One part file's n rows as an Arrow table with `output_schema(with_oracle, spec.objectives)`,
    and its label totals. `keys` is (split_id, file_index), the file's place in the stream keys."""
    rng = part_rng(spec.seed, *keys)
    imp = sample_impressions(tables, spec, rng, n)
    true = truth(signals(tables, imp), cal, spec)
    labels = draw_labels(true, spec, rng, lambda stream: label_rng(spec.seed, *keys, stream))

    u, i = imp.user, imp.item
    columns: dict[str, pa.Array | np.ndarray] = {
        "row_id": np.arange(first_row_id, first_row_id + n, dtype=np.int64),
        "user_id": u,
        "item_id": i,
        "item_category": tables.item_category[i],
        "item_brand": tables.item_brand[i],
        "user_city": tables.user_city[u],
        "user_age": tables.user_age[u],
        "device": imp.device,
        "hour": imp.hour,
        "hist_categories": tables.user_hist.take(pa.array(u)),
        "price": tables.item_price[i],
        "item_ctr_7d": tables.item_ctr_7d[i],
        "user_activity": tables.user_activity[u],
    }
    for name, label in labels.items():
        columns[name] = label.astype(label_type(name).to_pandas_dtype())
    if with_oracle:
        columns.update(oracles(true, spec))
    schema = output_schema(with_oracle, spec.objectives)
    table = pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)
    counts = _PartCounts(
        rows=n,
        clicks=int(np.sum(labels["click"])) if "click" in labels else 0,
        sums={name: float(np.sum(columns[name], dtype=np.float64)) for name in spec.objectives},
    )
    return table, counts


def _file_sizes(rows: int, rows_per_file: int) -> list[int]:
    """Row counts of the part files of a split of `rows` rows, each at most rows_per_file."""
    full, rest = divmod(rows, rows_per_file)
    return [rows_per_file] * full + ([rest] if rest else [])


def _prepare_split_dir(path: Path, overwrite: bool) -> None:
    """Create an empty split directory. A non-empty one is refused (its stale parts would mix in)
    unless ``overwrite``, which deletes it first."""
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{path} is not empty; generate into a fresh directory or overwrite it")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def _write_split(
    split_dir: Path,
    split_id: int,
    first_row_id: int,
    rows: int,
    tables: LatentTables,
    cal: Calibration,
    spec: GeneratorSpec,
) -> list[_PartCounts]:
    """Write one split as part files of at most rows_per_file rows; returns their label totals."""
    counts = []
    row_id = first_row_id
    for file_index, n in enumerate(_file_sizes(rows, spec.rows_per_file)):
        with_oracle = split_id == TEST_SPLIT_ID
        table, part = _part_table(tables, cal, spec, (split_id, file_index), row_id, n, with_oracle)
        path = split_dir / f"part-{file_index:05d}.parquet"
        pq.write_table(table, path, row_group_size=spec.row_group_size)
        counts.append(part)
        logger.info("wrote %s (%d rows, %d row groups)", path, n, -(-n // spec.row_group_size))
        row_id += n
    return counts


def _rates(parts: list[_PartCounts], spec: GeneratorSpec) -> dict[str, float]:
    """The summary's realised rates (see GenerateSummary.rates) from the part files' totals."""
    rows = sum(p.rows for p in parts)
    clicks = sum(p.clicks for p in parts)
    rates: dict[str, float] = {}
    for name in spec.objectives:
        obj, total = CATALOGUE[name], sum(p.sums[name] for p in parts)
        if obj.kind == "binary":
            rates[name] = total / rows
        if obj.needs_click:
            rates[f"{name}_given_click"] = total / clicks if clicks else 0.0
    return rates


def generate(out_dir: str | Path, spec: GeneratorSpec, *, overwrite: bool = False) -> GenerateSummary:
    """Write the train and test splits and config.yaml of `spec` under out_dir; return a summary.

    Raises FileExistsError if out_dir/train or out_dir/test already holds files, unless `overwrite`
    (which replaces those two directories, nothing else).
    """
    start = time.perf_counter()
    out = Path(out_dir)
    for split in ("train", "test"):
        _prepare_split_dir(out / split, overwrite)
    tables = build_tables(spec)
    cal = calibrate(tables, spec)
    logger.info(
        "calibrated intercepts: %s",
        ", ".join(f"{name} {value:.3f}" for name, value in cal.intercepts.items()),
    )
    train = _write_split(out / "train", TRAIN_SPLIT_ID, 0, spec.train_rows, tables, cal, spec)
    test = _write_split(out / "test", TEST_SPLIT_ID, spec.train_rows, spec.test_rows, tables, cal, spec)
    config_path = out / "config.yaml"
    with config_path.open("w", encoding="utf-8") as fh:
        yaml.safe_dump(feature_config(spec), fh, sort_keys=False)
    return GenerateSummary(
        train_rows=spec.train_rows,
        test_rows=spec.test_rows,
        train_files=len(train),
        test_files=len(test),
        rates=_rates(train + test, spec),
        seconds=time.perf_counter() - start,
        config_path=config_path,
    )
