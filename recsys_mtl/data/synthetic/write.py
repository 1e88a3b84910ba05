"""Part files, splits and `generate`: the generator's only writer.

Memory is bounded by `rows_per_file`: each part file is generated and written on its own from its own
random streams (`streams.part_rng`, `streams.label_rng`), with the latent tables and the calibration
shared by every file. A multi-day run (`spec.days` > 1) writes out_dir/day_<d>/ for each day the same
way, from per-day views of one set of latent tables (`days.py`).
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
from recsys_mtl.data.synthetic.days import Day, day_tables, plan_days
from recsys_mtl.data.synthetic.latent import LatentTables, build_tables, sample_impressions, signals
from recsys_mtl.data.synthetic.objectives import Calibration, calibrate, draw_labels, oracles, truth
from recsys_mtl.data.synthetic.spec import GeneratorSpec
from recsys_mtl.data.synthetic.streams import TEST_SPLIT_ID, TRAIN_SPLIT_ID, label_rng, part_rng

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DaySummary:
    """What a multi-day run wrote for one day (out_dir/day_<day>/).

    users, items: the ids that exist that day (0 .. users - 1, 0 .. items - 1); new_users, new_items:
    how many of them are new that day; new_user_share, new_item_share: the share of the day's rows
    (both splits) whose user, resp. item, is new that day. rates as in GenerateSummary.
    """

    day: int
    users: int
    items: int
    new_users: int
    new_items: int
    train_rows: int
    test_rows: int
    train_files: int
    test_files: int
    new_user_share: float
    new_item_share: float
    rates: dict[str, float]
    config_path: Path


@dataclass(frozen=True)
class GenerateSummary:
    """What `generate` wrote, with the realised rates over both splits (and every day).

    rates: per objective ``<name>`` (binary: the entire-space rate) and, for the objectives that need
    a click, ``<name>_given_click`` (binary: the rate on clicked rows; watch_time: the mean seconds on
    clicked rows). days: one entry per day of a multi-day run, empty for a single day.
    """

    train_rows: int
    test_rows: int
    train_files: int
    test_files: int
    rates: dict[str, float]
    seconds: float
    config_path: Path
    days: tuple[DaySummary, ...] = ()

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
    """Totals of one part file, for the summary: rows, clicks, each label column's sum and the rows
    whose user, resp. item, is new that day."""

    rows: int
    clicks: int
    sums: dict[str, float]
    new_user_rows: int = 0
    new_item_rows: int = 0


@dataclass(frozen=True)
class _Split:
    """Where one split of one day goes: its directory, split id, day (None: single-day run), first
    row id and rows; new_from: the first new (user, item) id of the day, for the counts."""

    path: Path
    split_id: int
    day: int | None
    first_row_id: int
    rows: int
    new_from: tuple[int, int]


def _part_table(
    tables: LatentTables,
    cal: Calibration,
    spec: GeneratorSpec,
    split: _Split,
    file_index: int,
    first_row_id: int,
    n: int,
) -> tuple[pa.Table, _PartCounts]:
    """One part file's n rows as an Arrow table with `output_schema(with_oracle, spec.objectives)`
    (oracles on the test split), and its totals; its streams are keyed by split, file and day."""
    keys = (split.split_id, file_index)
    rng = part_rng(spec.seed, *keys, day=split.day)
    imp = sample_impressions(tables, spec, rng, n)
    true = truth(signals(tables, imp), cal, spec)
    labels = draw_labels(true, spec, rng, lambda stream: label_rng(spec.seed, *keys, stream, day=split.day))
    with_oracle = split.split_id == TEST_SPLIT_ID

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
        new_user_rows=int(np.count_nonzero(u >= split.new_from[0])),
        new_item_rows=int(np.count_nonzero(i >= split.new_from[1])),
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
    split: _Split, tables: LatentTables, cal: Calibration, spec: GeneratorSpec
) -> list[_PartCounts]:
    """Write one split as part files of at most rows_per_file rows; returns their totals."""
    counts = []
    row_id = split.first_row_id
    for file_index, n in enumerate(_file_sizes(split.rows, spec.rows_per_file)):
        table, part = _part_table(tables, cal, spec, split, file_index, row_id, n)
        path = split.path / f"part-{file_index:05d}.parquet"
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


def _write_config(path: Path, config: dict) -> Path:
    """Write a feature config as YAML to `path`; returns the path."""
    with path.open("w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    return path


def _calibrate(tables: LatentTables, spec: GeneratorSpec) -> Calibration:
    """`objectives.calibrate`, logged."""
    cal = calibrate(tables, spec)
    logger.info(
        "calibrated intercepts: %s",
        ", ".join(f"{name} {value:.3f}" for name, value in cal.intercepts.items()),
    )
    return cal


def generate(out_dir: str | Path, spec: GeneratorSpec, *, overwrite: bool = False) -> GenerateSummary:
    """Write the train and test splits and config.yaml of `spec` under out_dir; return a summary.

    With spec.days > 1 every day gets its own out_dir/day_<d>/{train,test,config.yaml} (see
    `generate_days`). Raises FileExistsError if a split directory to write already holds files,
    unless `overwrite` (which replaces those directories, nothing else).
    """
    if spec.days > 1:
        return generate_days(out_dir, spec, overwrite=overwrite)
    start = time.perf_counter()
    out = Path(out_dir)
    for split in ("train", "test"):
        _prepare_split_dir(out / split, overwrite)
    tables = build_tables(spec)
    cal = _calibrate(tables, spec)
    new_from = (spec.num_users, spec.num_items)
    train = _write_split(
        _Split(out / "train", TRAIN_SPLIT_ID, None, 0, spec.train_rows, new_from), tables, cal, spec
    )
    test = _write_split(
        _Split(out / "test", TEST_SPLIT_ID, None, spec.train_rows, spec.test_rows, new_from),
        tables,
        cal,
        spec,
    )
    config_path = _write_config(out / "config.yaml", feature_config(spec))
    return GenerateSummary(
        train_rows=spec.train_rows,
        test_rows=spec.test_rows,
        train_files=len(train),
        test_files=len(test),
        rates=_rates(train + test, spec),
        seconds=time.perf_counter() - start,
        config_path=config_path,
    )


def generate_days(out_dir: str | Path, spec: GeneratorSpec, *, overwrite: bool = False) -> GenerateSummary:
    """Write spec.days consecutive days (`days.py`) under out_dir; return a summary with one entry per day.

    Day d goes to out_dir/day_<d>/: train/ and test/ splits of spec.rows rows together (row ids
    (d-1)·rows .. d·rows - 1, unique over the run) and config.yaml pointing at them; every day's
    feature config is the same apart from the data paths, with tables sized for the ids of every day.
    out_dir/config.yaml is day 1's, with its data paths (day_1/train, day_1/test).
    """
    start = time.perf_counter()
    out = Path(out_dir)
    for day in range(1, spec.days + 1):
        for split in ("train", "test"):
            _prepare_split_dir(out / f"day_{day}" / split, overwrite)
    tables = build_tables(spec)
    plan = plan_days(spec)
    cal = _calibrate(day_tables(tables, spec, plan[0]), spec)
    summaries, parts = [], []
    for day in plan:
        summary, day_parts = _write_day(out / f"day_{day.day}", day, day_tables(tables, spec, day), cal, spec)
        summaries.append(summary)
        parts += day_parts
        logger.info(
            "day %d: %d users (%d new), %d items (%d new)",
            day.day,
            day.users,
            day.new_users,
            day.items,
            day.new_items,
        )
    config = feature_config(spec)
    config["data"] = {**config["data"], "train": "day_1/train", "eval": "day_1/test"}
    return GenerateSummary(
        train_rows=spec.days * spec.train_rows,
        test_rows=spec.days * spec.test_rows,
        train_files=sum(s.train_files for s in summaries),
        test_files=sum(s.test_files for s in summaries),
        rates=_rates(parts, spec),
        seconds=time.perf_counter() - start,
        config_path=_write_config(out / "config.yaml", config),
        days=tuple(summaries),
    )


def _write_day(
    day_dir: Path, day: Day, tables: LatentTables, cal: Calibration, spec: GeneratorSpec
) -> tuple[DaySummary, list[_PartCounts]]:
    """Write one day's splits and config.yaml under day_dir; returns its summary and part totals."""
    first = (day.day - 1) * spec.rows
    new_from = (day.users - day.new_users, day.items - day.new_items)
    train = _write_split(
        _Split(day_dir / "train", TRAIN_SPLIT_ID, day.day, first, spec.train_rows, new_from),
        tables,
        cal,
        spec,
    )
    test = _write_split(
        _Split(day_dir / "test", TEST_SPLIT_ID, day.day, first + spec.train_rows, spec.test_rows, new_from),
        tables,
        cal,
        spec,
    )
    parts = train + test
    summary = DaySummary(
        day=day.day,
        users=day.users,
        items=day.items,
        new_users=day.new_users,
        new_items=day.new_items,
        train_rows=spec.train_rows,
        test_rows=spec.test_rows,
        train_files=len(train),
        test_files=len(test),
        new_user_share=sum(p.new_user_rows for p in parts) / spec.rows,
        new_item_share=sum(p.new_item_rows for p in parts) / spec.rows,
        rates=_rates(parts, spec),
        config_path=_write_config(day_dir / "config.yaml", feature_config(spec)),
    )
    return summary, parts
