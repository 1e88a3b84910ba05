"""Synthetic multi-task impression logs with a known ground truth.

`generate(out_dir, spec)` writes

    out_dir/train/part-00000.parquet ...   features + labels
    out_dir/test/part-00000.parquet ...    features + labels + oracle probabilities
    out_dir/config.yaml                    the feature config (`feature_config(spec)`)

Every impression is a (user, item, device, hour) tuple drawn from fixed latent tables; labels come
from a latent model the generator knows exactly, so the test split can carry the Bayes-optimal
predictions ("oracle" columns) a trained model can be measured against:

* click: logit = intercept + item attractiveness + user.item affinity + |affinity| + preferred-category
  match + device x hour interaction + sin/product terms of price and age + small linear effects.
  The |.|, sin and pure-interaction terms are there so that a linear model on one-hot features
  cannot reach the oracle while an MLP over embeddings can.
* conversion (only on clicked rows): logit = intercept + task_corr * z_click + sqrt(1 - task_corr^2)
  * z_indep, both standardized; z_indep comes from a second, independent user.item product plus
  price and age effects, so task_corr dials how much the two tasks share.
* watch time (only on clicked rows): LogNormal with mean mu(x) = exp(linear in features).

Intercepts are calibrated once per spec on a fixed calibration sample, so every file shares them.
Memory is bounded by `rows_per_file`: each part file is generated and written on its own from its
own random stream `np.random.default_rng([seed, split_id, file_index])`.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

logger = logging.getLogger(__name__)

ORACLE_COLUMNS = ("oracle_pctr", "oracle_pcvr", "oracle_pctcvr", "oracle_watch_time")

NUM_AGE_BUCKETS = 10
NUM_DEVICES = 10
NUM_HOURS = 24
EMBEDDING_DIM = 16

# Preferred categories per user: the user's taste, the source of most of their history and of the
# category-match click effect.
_PREFERRED_PER_USER = 3
# Share of history entries taken from the user's preferred categories (the rest is browsing noise).
_HIST_PREFERRED_SHARE = 0.8
# Concentration of the Beta distribution of item_ctr_7d around the item's baseline click rate:
# higher means the historical rate is a less noisy proxy of attractiveness.
_CTR_7D_CONCENTRATION = 60.0
_CVR_SIGNAL_SCALE = 1.0
_WATCH_TIME_SIGMA = 0.7

# Seed-sequence keys. Part files use [seed, split_id, file_index] (three entries), the global tables
# and the calibration sample use two-entry keys, so no stream can coincide with another.
_TRAIN_SPLIT_ID = 0
_TEST_SPLIT_ID = 1
_TABLES_STREAM = 2
_CALIBRATION_STREAM = 3


@dataclass(frozen=True)
class GeneratorSpec:
    """All knobs of the generator; validated on construction (ValueError naming the field)."""

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


@dataclass(frozen=True)
class GenerateSummary:
    """What `generate` wrote, with realised base rates over both splits."""

    train_rows: int
    test_rows: int
    train_files: int
    test_files: int
    ctr: float
    cvr_given_click: float
    mean_watch_time_clicked: float
    seconds: float
    config_path: Path


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


def feature_config(spec: GeneratorSpec) -> dict:
    """The feature-config dict for a dataset generated with `spec` (written to out_dir/config.yaml).

    Data paths are relative to the config file. The generated ids are dense (0..cardinality-1), so
    every feature uses ``id_map: identity`` with cardinality + 1 buckets (bucket 0 is reserved for
    null): no hash collisions, one embedding row per id.
    """
    sparse_cardinalities = {
        "user_id": spec.num_users,
        "item_id": spec.num_items,
        "item_category": spec.num_categories,
        "item_brand": spec.num_brands,
        "user_city": spec.num_cities,
        "user_age": NUM_AGE_BUCKETS,
        "device": NUM_DEVICES,
        "hour": NUM_HOURS,
    }
    sides = {
        "user_id": "user", "user_city": "user", "user_age": "user", "hist_categories": "user",
        "user_activity": "user", "device": "context", "hour": "context",
    }  # the rest describe the item

    def served(name: str) -> dict:
        return {"side": sides.get(name, "item"), **({"required": True} if name == "item_id" else {})}

    return {
        # tuned on 1M generated rows, 2 ranks, one epoch: smaller batches (more steps) and a higher dense
        # LR beat the library defaults (batch 4096, LR 2e-3), which suit much larger logs
        "data": {"train": "train", "eval": "test", "batch_size": 512},
        "features": {
            "sparse": [
                {
                    "name": name,
                    "num_embeddings": int(card) + 1,
                    "dim": EMBEDDING_DIM,
                    "id_map": "identity",
                    **served(name),
                }
                for name, card in sparse_cardinalities.items()
            ],
            "multi_hot": [
                {
                    "name": "hist_categories",
                    "num_embeddings": int(spec.num_categories) + 1,
                    "dim": EMBEDDING_DIM,
                    "id_map": "identity",
                    "pooling": "mean",
                    "max_length": max(int(spec.max_hist_len), 1),
                    **served("hist_categories"),
                }
            ],
            "dense": [
                {"name": "price", "transform": "log1p", **served("price")},
                {"name": "item_ctr_7d", "transform": "standardize", **served("item_ctr_7d")},
                {"name": "user_activity", "transform": "log1p", **served("user_activity")},
            ],
        },
        "labels": {"click": "click", "conversion": "conversion", "watch_time": "watch_time"},
        "group_key": "user_id",
        "train": {"dense_lr": 0.005},
    }


def output_schema(with_oracle: bool) -> pa.Schema:
    """Arrow schema of a part file; the test split (`with_oracle=True`) adds ORACLE_COLUMNS."""
    fields = [
        ("row_id", pa.int64()),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("item_category", pa.int64()),
        ("item_brand", pa.int64()),
        ("user_city", pa.int64()),
        ("user_age", pa.int64()),
        ("device", pa.int64()),
        ("hour", pa.int64()),
        ("hist_categories", pa.list_(pa.int64())),
        ("price", pa.float32()),
        ("item_ctr_7d", pa.float32()),
        ("user_activity", pa.float32()),
        ("click", pa.int8()),
        ("conversion", pa.int8()),
        ("watch_time", pa.float32()),
    ]
    if with_oracle:
        fields += [(name, pa.float32()) for name in ORACLE_COLUMNS]
    return pa.schema(fields)


# --------------------------------------------------------------------------------------------------
# Latent tables (generated once per spec)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LatentTables:
    """Per-user, per-item and per-context parameters. U users, I items, d latent dim, K preferred."""

    user_cdf: np.ndarray  # (U,) float64 cumulative impression share
    user_vec: np.ndarray  # (U, d) float64 click taste
    user_vec_conv: np.ndarray  # (U, d) float64 conversion taste, independent of user_vec
    user_age: np.ndarray  # (U,) int64 bucket
    user_age_z: np.ndarray  # (U,) float64 standardized age bucket
    user_city: np.ndarray  # (U,) int64
    user_activity: np.ndarray  # (U,) float32 count-like
    user_activity_z: np.ndarray  # (U,) float64 standardized log1p(activity)
    user_pref: np.ndarray  # (U, K) int64 preferred categories
    user_hist: pa.ListArray  # (U,) list<int64> history categories
    item_cdf: np.ndarray  # (I,) float64 cumulative impression share
    item_vec: np.ndarray  # (I, d) float64
    item_vec_conv: np.ndarray  # (I, d) float64
    item_category: np.ndarray  # (I,) int64
    item_brand: np.ndarray  # (I,) int64
    item_price: np.ndarray  # (I,) float32
    item_price_z: np.ndarray  # (I,) float64 standardized log price
    item_attract: np.ndarray  # (I,) float64 click-logit offset
    item_ctr_7d: np.ndarray  # (I,) float32
    item_watch: np.ndarray  # (I,) float64 log watch-time offset (content length)
    items_by_category: np.ndarray  # (I,) int64 item indices sorted by category
    category_start: np.ndarray  # (C,) int64 offset of each category in items_by_category
    category_count: np.ndarray  # (C,) int64 items per category
    device_cdf: np.ndarray  # (NUM_DEVICES,) float64
    hour_cdf: np.ndarray  # (NUM_HOURS,) float64
    device_hour_effect: np.ndarray  # (NUM_DEVICES, NUM_HOURS) float64, zero row and column means
    device_watch: np.ndarray  # (NUM_DEVICES,) float64 log watch-time offset


def _zipf_cdf(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """(n,) cumulative shares with p ∝ 1/rank^exponent, ranks shuffled so popularity isn't id order."""
    ranks = rng.permutation(n) + 1
    weights = 1.0 / ranks.astype(np.float64) ** exponent
    return _cdf(weights)


def _cdf(weights: np.ndarray) -> np.ndarray:
    """(n,) normalized cumulative sum of (n,) weights, with the last entry exactly 1."""
    cdf = np.cumsum(weights, dtype=np.float64)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf


def _draw(rng: np.random.Generator, cdf: np.ndarray, size: int | tuple[int, ...]) -> np.ndarray:
    """int64 indices drawn from the categorical distribution given by `cdf`, of shape `size`."""
    return np.searchsorted(cdf, rng.random(size), side="right").astype(np.int64)


def _standardize(x: np.ndarray) -> np.ndarray:
    """(n,) float64 z-scores of (n,) x; a constant x maps to zeros."""
    x = x.astype(np.float64)
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    """Elementwise logistic function, overflow-free for large |x|."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=np.float64)))


def _user_history(
    rng: np.random.Generator,
    activity: np.ndarray,
    pref: np.ndarray,
    item_category: np.ndarray,
    max_len: int,
) -> pa.ListArray:
    """(U,) list<int64> of history categories: length ~ Poisson(0.7 * activity) capped at max_len
    (inactive users get empty lists), entries mostly from the user's (U, K) preferred categories."""
    num_users = activity.shape[0]
    lengths = np.minimum(rng.poisson(0.7 * activity.astype(np.float64)), max_len)
    owner = np.repeat(np.arange(num_users), lengths)
    from_pref = rng.random(owner.shape[0]) < _HIST_PREFERRED_SHARE
    preferred = pref[owner, rng.integers(0, pref.shape[1], owner.shape[0])]
    browsed = item_category[rng.integers(0, item_category.shape[0], owner.shape[0])]
    values = np.where(from_pref, preferred, browsed).astype(np.int64)
    offsets = np.zeros(num_users + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int64()))


def _build_tables(spec: GeneratorSpec) -> _LatentTables:
    """Draw every per-user, per-item and per-context parameter from the [seed, tables] stream."""
    rng = np.random.default_rng([spec.seed, _TABLES_STREAM])
    d, num_users, num_items = spec.latent_dim, spec.num_users, spec.num_items

    category_of_item = _draw(rng, _zipf_cdf(rng, spec.num_categories, 0.8), num_items)
    item_brand = _draw(rng, _zipf_cdf(rng, spec.num_brands, 0.9), num_items)
    brand_quality = rng.normal(0.0, 0.3, spec.num_brands)
    item_attract = brand_quality[item_brand] + rng.normal(0.0, 0.5, num_items)
    # Categories differ in price level (electronics vs socks); items scatter around their category.
    category_log_price = rng.normal(3.0, 0.8, spec.num_categories)
    log_price = category_log_price[category_of_item] + rng.normal(0.0, 0.6, num_items)
    # The 7-day CTR is a noisy historical measurement of the item's own attractiveness.
    baseline_ctr = _sigmoid(math.log(spec.target_ctr / (1.0 - spec.target_ctr)) + item_attract)
    item_ctr_7d = rng.beta(baseline_ctr * _CTR_7D_CONCENTRATION, (1.0 - baseline_ctr) * _CTR_7D_CONCENTRATION)

    # Preferred categories are drawn as the categories of random items, so every preferred category
    # has items to serve and popular categories are popular tastes.
    user_pref = category_of_item[rng.integers(0, num_items, (num_users, _PREFERRED_PER_USER))]
    age_weights = np.exp(-((np.arange(NUM_AGE_BUCKETS) - 4.0) ** 2) / 8.0)
    user_age = _draw(rng, _cdf(age_weights), num_users)
    user_city = _draw(rng, _zipf_cdf(rng, spec.num_cities, 1.0), num_users)
    user_activity = np.floor(rng.lognormal(1.5, 1.1, num_users))
    user_hist = _user_history(rng, user_activity, user_pref, category_of_item, spec.max_hist_len)

    items_by_category = np.argsort(category_of_item, kind="stable").astype(np.int64)
    category_count = np.bincount(category_of_item, minlength=spec.num_categories).astype(np.int64)
    category_start = np.concatenate([[0], np.cumsum(category_count)[:-1]]).astype(np.int64)

    hour_weights = np.exp(np.cos(2.0 * np.pi * (np.arange(NUM_HOURS) - 20.0) / NUM_HOURS))
    device_hour = rng.normal(0.0, 0.5, (NUM_DEVICES, NUM_HOURS))
    # Double-centering leaves a pure interaction: one-hot device and hour terms of a linear model
    # explain none of it.
    device_hour -= device_hour.mean(axis=0, keepdims=True)
    device_hour -= device_hour.mean(axis=1, keepdims=True)

    return _LatentTables(
        user_cdf=_zipf_cdf(rng, num_users, spec.user_zipf_exponent),
        user_vec=rng.normal(0.0, 1.0, (num_users, d)),
        user_vec_conv=rng.normal(0.0, 1.0, (num_users, d)),
        user_age=user_age,
        user_age_z=_standardize(user_age),
        user_city=user_city,
        user_activity=user_activity.astype(np.float32),
        user_activity_z=_standardize(np.log1p(user_activity)),
        user_pref=user_pref,
        user_hist=user_hist,
        item_cdf=_zipf_cdf(rng, num_items, spec.item_zipf_exponent),
        item_vec=rng.normal(0.0, 1.0, (num_items, d)),
        item_vec_conv=rng.normal(0.0, 1.0, (num_items, d)),
        item_category=category_of_item,
        item_brand=item_brand,
        item_price=np.exp(log_price).astype(np.float32),
        item_price_z=_standardize(log_price),
        item_attract=item_attract,
        item_ctr_7d=item_ctr_7d.astype(np.float32),
        item_watch=rng.normal(0.0, 0.3, num_items),
        items_by_category=items_by_category,
        category_start=category_start,
        category_count=category_count,
        device_cdf=_cdf(rng.dirichlet(np.full(NUM_DEVICES, 2.0))),
        hour_cdf=_cdf(hour_weights),
        device_hour_effect=device_hour,
        device_watch=rng.normal(0.0, 0.1, NUM_DEVICES),
    )


# --------------------------------------------------------------------------------------------------
# Impressions and the latent model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Impressions:
    """n impressions as (n,) int64 index arrays into the latent tables."""

    user: np.ndarray
    item: np.ndarray
    device: np.ndarray
    hour: np.ndarray


@dataclass(frozen=True)
class _Signals:
    """(n,) float64 latent quantities of n impressions, before calibration."""

    click: np.ndarray  # click logit without intercept
    indep: np.ndarray  # conversion signal independent of the click signal
    log_watch: np.ndarray  # log mean watch time without intercept


@dataclass(frozen=True)
class _Calibration:
    """Constants shared by every file of one spec."""

    click_mean: float
    click_std: float
    indep_mean: float
    indep_std: float
    click_intercept: float
    conv_intercept: float
    watch_intercept: float


def _sample_impressions(
    tables: _LatentTables, spec: GeneratorSpec, rng: np.random.Generator, n: int
) -> _Impressions:
    """n impressions: Zipf users; items from a preferred category with preferred_category_prob,
    otherwise Zipf-popular; device and hour from their context distributions."""
    user = _draw(rng, tables.user_cdf, n)
    popular_item = _draw(rng, tables.item_cdf, n)
    category = tables.user_pref[user, rng.integers(0, _PREFERRED_PER_USER, n)]
    within = (rng.random(n) * tables.category_count[category]).astype(np.int64)
    preferred_item = tables.items_by_category[tables.category_start[category] + within]
    from_pref = rng.random(n) < spec.preferred_category_prob
    return _Impressions(
        user=user,
        item=np.where(from_pref, preferred_item, popular_item),
        device=_draw(rng, tables.device_cdf, n),
        hour=_draw(rng, tables.hour_cdf, n),
    )


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) row-wise dot products of two (n, d) arrays, scaled by 1/sqrt(d) to unit variance."""
    return np.einsum("nd,nd->n", a, b) / math.sqrt(a.shape[1])


def _signals(tables: _LatentTables, imp: _Impressions) -> _Signals:
    """Latent click, independent-conversion and log-watch-time signals of n impressions."""
    u, i = imp.user, imp.item
    affinity = _row_dot(tables.user_vec[u], tables.item_vec[i])
    match = (tables.user_pref[u] == tables.item_category[i][:, None]).any(axis=1).astype(np.float64)
    price_z = tables.item_price_z[i]
    age_z = tables.user_age_z[u]
    click = (
        tables.item_attract[i]
        + 0.8 * affinity
        + 0.6 * np.abs(affinity)
        + 1.0 * match
        + tables.device_hour_effect[imp.device, imp.hour]
        + 0.5 * np.sin(1.5 * price_z + 0.8 * tables.user_age[u])
        + 0.3 * price_z * age_z
        + 0.2 * tables.user_activity_z[u]
        - 0.2 * price_z
    )
    indep = _row_dot(tables.user_vec_conv[u], tables.item_vec_conv[i]) - 0.5 * price_z + 0.3 * age_z
    log_watch = (
        0.3 * affinity + 0.25 * match + tables.item_watch[i] + 0.15 * age_z + tables.device_watch[imp.device]
    )
    return _Signals(click=click, indep=indep, log_watch=log_watch)


def _conversion_logit(sig: _Signals, cal: _Calibration, task_corr: float) -> np.ndarray:
    """(n,) conversion logit without intercept: task_corr-weighted mix of the standardized signals."""
    z_click = (sig.click - cal.click_mean) / cal.click_std
    z_indep = (sig.indep - cal.indep_mean) / cal.indep_std
    mixed = task_corr * z_click + math.sqrt(max(0.0, 1.0 - task_corr**2)) * z_indep
    return _CVR_SIGNAL_SCALE * mixed


def _bisect_increasing(f: Callable[[float], float], target: float, lo: float, hi: float) -> float:
    """x in [lo, hi] with f(x) = target for an increasing f, to float64 precision."""
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _calibrate(tables: _LatentTables, spec: GeneratorSpec) -> _Calibration:
    """Fit the click, conversion and watch-time intercepts on a fixed sample of calibration_rows
    impressions so that CTR = target_ctr, CVR | click = target_cvr, E[T | click] = mean_watch_time_s."""
    rng = np.random.default_rng([spec.seed, _CALIBRATION_STREAM])
    sig = _signals(tables, _sample_impressions(tables, spec, rng, spec.calibration_rows))
    click_intercept = _bisect_increasing(
        lambda b: float(_sigmoid(b + sig.click).mean()), spec.target_ctr, -40.0, 40.0
    )
    pctr = _sigmoid(click_intercept + sig.click)
    # The conversion logit needs the standardization stats; its intercept is fitted after.
    stats = _Calibration(
        click_mean=float(sig.click.mean()),
        click_std=float(sig.click.std()) or 1.0,
        indep_mean=float(sig.indep.mean()),
        indep_std=float(sig.indep.std()) or 1.0,
        click_intercept=click_intercept,
        conv_intercept=0.0,
        watch_intercept=0.0,
    )
    conv_logit = _conversion_logit(sig, stats, spec.task_corr)
    conv_intercept = _bisect_increasing(
        lambda b: float(np.sum(pctr * _sigmoid(b + conv_logit)) / np.sum(pctr)), spec.target_cvr, -40.0, 40.0
    )
    clicked_mean = float(np.sum(pctr * np.exp(sig.log_watch)) / np.sum(pctr))
    return replace(
        stats,
        conv_intercept=conv_intercept,
        watch_intercept=math.log(spec.mean_watch_time_s) - math.log(clicked_mean),
    )


# --------------------------------------------------------------------------------------------------
# Part files
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PartCounts:
    """Label totals of one part file, for the summary."""

    clicks: int
    conversions: int
    watch_time_sum: float


def _part_table(
    tables: _LatentTables,
    cal: _Calibration,
    spec: GeneratorSpec,
    rng: np.random.Generator,
    first_row_id: int,
    n: int,
    with_oracle: bool,
) -> pa.Table:
    """One part file's n rows as an Arrow table with `output_schema(with_oracle)`."""
    imp = _sample_impressions(tables, spec, rng, n)
    sig = _signals(tables, imp)
    pctr = _sigmoid(cal.click_intercept + sig.click)
    pcvr = _sigmoid(cal.conv_intercept + _conversion_logit(sig, cal, spec.task_corr))
    watch_mean = np.exp(cal.watch_intercept + sig.log_watch)

    click = rng.random(n) < pctr
    conversion = click & (rng.random(n) < pcvr)
    # Mean-preserving LogNormal: E[T | click, x] = watch_mean exactly, and T > 0 always.
    noise = np.exp(_WATCH_TIME_SIGMA * rng.standard_normal(n) - 0.5 * _WATCH_TIME_SIGMA**2)
    watch_time = np.where(click, watch_mean * noise, 0.0)

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
        "click": click.astype(np.int8),
        "conversion": conversion.astype(np.int8),
        "watch_time": watch_time.astype(np.float32),
    }
    if with_oracle:
        pctr32 = pctr.astype(np.float32)
        pcvr32 = pcvr.astype(np.float32)
        columns["oracle_pctr"] = pctr32
        columns["oracle_pcvr"] = pcvr32
        # Product of the stored float32 values, so the identity holds exactly on disk.
        columns["oracle_pctcvr"] = pctr32 * pcvr32
        columns["oracle_watch_time"] = (pctr * watch_mean).astype(np.float32)
    schema = output_schema(with_oracle)
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


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
    tables: _LatentTables,
    cal: _Calibration,
    spec: GeneratorSpec,
) -> list[_PartCounts]:
    """Write one split as part files of at most rows_per_file rows; returns their label totals."""
    counts = []
    row_id = first_row_id
    for file_index, n in enumerate(_file_sizes(rows, spec.rows_per_file)):
        rng = np.random.default_rng([spec.seed, split_id, file_index])
        table = _part_table(tables, cal, spec, rng, row_id, n, with_oracle=split_id == _TEST_SPLIT_ID)
        path = split_dir / f"part-{file_index:05d}.parquet"
        pq.write_table(table, path, row_group_size=spec.row_group_size)
        counts.append(
            _PartCounts(
                clicks=int(np.sum(table["click"].to_numpy())),
                conversions=int(np.sum(table["conversion"].to_numpy())),
                watch_time_sum=float(np.sum(table["watch_time"].to_numpy(), dtype=np.float64)),
            )
        )
        logger.info("wrote %s (%d rows, %d row groups)", path, n, -(-n // spec.row_group_size))
        row_id += n
    return counts


def generate(out_dir: str | Path, spec: GeneratorSpec, *, overwrite: bool = False) -> GenerateSummary:
    """Write the train and test splits and config.yaml of `spec` under out_dir; return a summary.

    Raises FileExistsError if out_dir/train or out_dir/test already holds files, unless `overwrite`
    (which replaces those two directories, nothing else).
    """
    start = time.perf_counter()
    out = Path(out_dir)
    for split in ("train", "test"):
        _prepare_split_dir(out / split, overwrite)
    tables = _build_tables(spec)
    cal = _calibrate(tables, spec)
    logger.info(
        "calibrated intercepts: click %.3f, conversion %.3f, log watch time %.3f",
        cal.click_intercept,
        cal.conv_intercept,
        cal.watch_intercept,
    )
    train = _write_split(out / "train", _TRAIN_SPLIT_ID, 0, spec.train_rows, tables, cal, spec)
    test = _write_split(out / "test", _TEST_SPLIT_ID, spec.train_rows, spec.test_rows, tables, cal, spec)
    config_path = out / "config.yaml"
    with config_path.open("w", encoding="utf-8") as fh:
        yaml.safe_dump(feature_config(spec), fh, sort_keys=False)

    parts = train + test
    clicks = sum(p.clicks for p in parts)
    return GenerateSummary(
        train_rows=spec.train_rows,
        test_rows=spec.test_rows,
        train_files=len(train),
        test_files=len(test),
        ctr=clicks / spec.rows,
        cvr_given_click=sum(p.conversions for p in parts) / clicks if clicks else 0.0,
        mean_watch_time_clicked=sum(p.watch_time_sum for p in parts) / clicks if clicks else 0.0,
        seconds=time.perf_counter() - start,
        config_path=config_path,
    )
