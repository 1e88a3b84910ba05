"""GeneratorSpec: every knob of the synthetic generator, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recsys_mtl.data.synthetic.catalogue import CATALOGUE, CLASSIC, PRESETS, parse_objectives


@dataclass(frozen=True)
class GeneratorSpec:
    """All knobs of the generator; validated on construction (ValueError naming the field).

    `objectives` picks the label columns from the catalogue (`catalogue.CATALOGUE`), in column order;
    a list is stored as a tuple, a string is read as a preset name or a comma list
    (`catalogue.parse_objectives`).

    `days` > 1 writes that many consecutive days (`days.py`): `num_users` and `num_items` exist on
    day 1, and each later day adds round(new_users_per_day · num_users) users and
    round(new_items_per_day · num_items) items with ids above the previous ones, and reshuffles the
    popularity ranks of a share `popularity_drift` of the existing items. `rows` and `test_fraction`
    are per day. With days = 1 the other three are ignored and the output is the single-day one.
    """

    rows: int = 1_000_000
    test_fraction: float = 0.1
    seed: int = 0
    task_corr: float = 0.5
    num_users: int = 100_000
    num_items: int = 50_000
    num_categories: int = 500
    num_brands: int = 5_000
    num_cities: int = 300
    max_hist_len: int = 20
    latent_dim: int = 8
    user_zipf_exponent: float = 1.05
    item_zipf_exponent: float = 1.05
    target_ctr: float = 0.04
    target_cvr: float = 0.03
    mean_watch_time_s: float = 60.0
    # Share of impressions served from one of the user's preferred categories, as a recommender
    # that already knows the user would do.
    preferred_category_prob: float = 0.3
    rows_per_file: int = 250_000
    row_group_size: int = 65_536
    calibration_rows: int = 200_000
    objectives: tuple[str, ...] = CLASSIC
    days: int = 1
    new_users_per_day: float = 0.05
    new_items_per_day: float = 0.1
    popularity_drift: float = 0.1

    def __post_init__(self) -> None:
        _check_int("rows", self.rows, 2, None)
        _check_float("test_fraction", self.test_fraction, 0.0, 1.0, closed=False)
        _check_int("seed", self.seed, 0, None)
        _check_float("task_corr", self.task_corr, -1.0, 1.0, closed=True)
        _check_int("num_users", self.num_users, 1, None)
        _check_int("num_items", self.num_items, 1, None)
        _check_int("num_categories", self.num_categories, 1, None)
        _check_int("num_brands", self.num_brands, 1, None)
        _check_int("num_cities", self.num_cities, 1, None)
        _check_int("max_hist_len", self.max_hist_len, 0, None)
        _check_int("latent_dim", self.latent_dim, 1, None)
        _check_float("user_zipf_exponent", self.user_zipf_exponent, 0.0, 5.0, closed=True)
        _check_float("item_zipf_exponent", self.item_zipf_exponent, 0.0, 5.0, closed=True)
        _check_float("target_ctr", self.target_ctr, 0.0, 1.0, closed=False)
        _check_float("target_cvr", self.target_cvr, 0.0, 1.0, closed=False)
        _check_float("mean_watch_time_s", self.mean_watch_time_s, 0.0, math.inf, closed=False)
        _check_float("preferred_category_prob", self.preferred_category_prob, 0.0, 1.0, closed=True)
        _check_int("rows_per_file", self.rows_per_file, 1, None)
        _check_int("row_group_size", self.row_group_size, 1, None)
        _check_int("calibration_rows", self.calibration_rows, 1_000, None)
        object.__setattr__(self, "objectives", _check_objectives(self.objectives))
        _check_int("days", self.days, 1, 1_000)
        _check_float("new_users_per_day", self.new_users_per_day, 0.0, 10.0, closed=True)
        _check_float("new_items_per_day", self.new_items_per_day, 0.0, 10.0, closed=True)
        _check_float("popularity_drift", self.popularity_drift, 0.0, 1.0, closed=True)
        test_rows = round(self.rows * self.test_fraction)
        if not 1 <= test_rows <= self.rows - 1:
            raise ValueError(
                f"test_fraction={self.test_fraction} with rows={self.rows} gives {test_rows} test rows; "
                "both splits need at least one row (round(rows * test_fraction) in [1, rows - 1])"
            )

    @property
    def test_rows(self) -> int:
        """Rows in the test split: round(rows * test_fraction)."""
        return round(self.rows * self.test_fraction)

    @property
    def train_rows(self) -> int:
        """Rows in the train split: rows - test_rows."""
        return self.rows - self.test_rows

    @property
    def new_users_each_day(self) -> int:
        """Users added on each day after the first: round(new_users_per_day · num_users); 0 when days = 1."""
        return round(self.new_users_per_day * self.num_users) if self.days > 1 else 0

    @property
    def new_items_each_day(self) -> int:
        """Items added on each day after the first: round(new_items_per_day · num_items); 0 when days = 1."""
        return round(self.new_items_per_day * self.num_items) if self.days > 1 else 0

    def users_on_day(self, day: int) -> int:
        """Users that exist on `day` (1-based): ids 0 .. users_on_day(day) - 1."""
        return self.num_users + (day - 1) * self.new_users_each_day

    def items_on_day(self, day: int) -> int:
        """Items that exist on `day` (1-based): ids 0 .. items_on_day(day) - 1."""
        return self.num_items + (day - 1) * self.new_items_each_day

    @property
    def total_users(self) -> int:
        """Users over all days (the latent tables' and the feature config's user count)."""
        return self.users_on_day(self.days)

    @property
    def total_items(self) -> int:
        """Items over all days (the latent tables' and the feature config's item count)."""
        return self.items_on_day(self.days)


def _check_objectives(value: object) -> tuple[str, ...]:
    """The validated objectives as a tuple: non-empty, known, unique, with click where one needs it."""
    allowed = f"presets {'|'.join(PRESETS)} or names {', '.join(CATALOGUE)}"
    if isinstance(value, str):
        try:
            return parse_objectives(value)
        except ValueError as exc:
            raise ValueError(f"objectives: {exc}") from None
    if not isinstance(value, (tuple, list)) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"objectives must be a non-empty tuple of names ({allowed}), got {value!r}")
    names = tuple(value)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise ValueError(f"objectives: unknown {', '.join(map(repr, unknown))}; allowed: {allowed}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"objectives: {', '.join(map(repr, duplicates))} listed more than once")
    needing = [n for n in names if CATALOGUE[n].needs_click]
    if needing and "click" not in names:
        raise ValueError(
            f"objectives: {', '.join(needing)} can only be positive on clicked rows; "
            "add 'click' to objectives"
        )
    return names


def _check_int(name: str, value: object, lo: int, hi: int | None) -> None:
    """Raise ValueError unless `value` is an int in [lo, hi] (hi None: unbounded)."""
    upper = "inf" if hi is None else str(hi)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int in [{lo}, {upper}], got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be in [{lo}, {upper}], got {value}")


def _check_float(name: str, value: object, lo: float, hi: float, *, closed: bool) -> None:
    """Raise ValueError unless `value` is a real number in [lo, hi] (closed) or (lo, hi); NaN fails."""
    interval = f"[{lo}, {hi}]" if closed else f"({lo}, {hi})"
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    inside = lo <= value <= hi if closed else lo < value < hi
    if not inside:
        raise ValueError(f"{name} must be in {interval}, got {value}")
