"""Latent tables, impression sampling and the latent signals of impressions.

Every impression is a (user, item, device, hour) tuple drawn from fixed latent tables (`build_tables`,
one set per spec); `signals` turns n impressions into the (n,) latent quantities the objectives are
built from (`objectives.py`). The tables of the classic objectives come from the [seed, 2] stream,
drawn exactly as they always were; each other objective with its own latent product gets its own
user and item tables from its own stream (`streams.own_tables_rng`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recsys_mtl.data.synthetic.catalogue import CATALOGUE
from recsys_mtl.data.synthetic.spec import GeneratorSpec
from recsys_mtl.data.synthetic.streams import own_tables_rng, tables_rng

NUM_AGE_BUCKETS = 10
NUM_DEVICES = 10
NUM_HOURS = 24

# Preferred categories per user: the user's taste, the source of most of their history and of the
# category-match click effect.
PREFERRED_PER_USER = 3
# Share of history entries taken from the user's preferred categories (the rest is browsing noise).
_HIST_PREFERRED_SHARE = 0.8
# Concentration of the Beta distribution of item_ctr_7d around the item's baseline click rate:
# higher means the historical rate is a less noisy proxy of attractiveness.
_CTR_7D_CONCENTRATION = 60.0


@dataclass(frozen=True)
class LatentTables:
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
    # objective name -> ((U, d), (I, d)) float64 own user and item tables, for the spec's objectives
    # whose logit has an own latent product
    own: dict[str, tuple[np.ndarray, np.ndarray]]


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


def standardize(x: np.ndarray) -> np.ndarray:
    """(n,) float64 z-scores of (n,) x; a constant x maps to zeros."""
    x = x.astype(np.float64)
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def sigmoid(x: np.ndarray | float) -> np.ndarray:
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


def build_tables(spec: GeneratorSpec) -> LatentTables:
    """Draw every per-user, per-item and per-context parameter: the classic tables from the
    [seed, 2] stream, each objective's own tables from its own stream."""
    rng = tables_rng(spec.seed)
    # every user and item of every day (= num_users, num_items for a single day): an id keeps its row
    d, num_users, num_items = spec.latent_dim, spec.total_users, spec.total_items

    category_of_item = _draw(rng, _zipf_cdf(rng, spec.num_categories, 0.8), num_items)
    item_brand = _draw(rng, _zipf_cdf(rng, spec.num_brands, 0.9), num_items)
    brand_quality = rng.normal(0.0, 0.3, spec.num_brands)
    item_attract = brand_quality[item_brand] + rng.normal(0.0, 0.5, num_items)
    # Categories differ in price level (electronics vs socks); items scatter around their category.
    category_log_price = rng.normal(3.0, 0.8, spec.num_categories)
    log_price = category_log_price[category_of_item] + rng.normal(0.0, 0.6, num_items)
    # The 7-day CTR is a noisy historical measurement of the item's own attractiveness.
    baseline_ctr = sigmoid(math.log(spec.target_ctr / (1.0 - spec.target_ctr)) + item_attract)
    item_ctr_7d = rng.beta(baseline_ctr * _CTR_7D_CONCENTRATION, (1.0 - baseline_ctr) * _CTR_7D_CONCENTRATION)

    # Preferred categories are drawn as the categories of random items, so every preferred category
    # has items to serve and popular categories are popular tastes.
    user_pref = category_of_item[rng.integers(0, num_items, (num_users, PREFERRED_PER_USER))]
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

    return LatentTables(
        user_cdf=_zipf_cdf(rng, num_users, spec.user_zipf_exponent),
        user_vec=rng.normal(0.0, 1.0, (num_users, d)),
        user_vec_conv=rng.normal(0.0, 1.0, (num_users, d)),
        user_age=user_age,
        user_age_z=standardize(user_age),
        user_city=user_city,
        user_activity=user_activity.astype(np.float32),
        user_activity_z=standardize(np.log1p(user_activity)),
        user_pref=user_pref,
        user_hist=user_hist,
        item_cdf=_zipf_cdf(rng, num_items, spec.item_zipf_exponent),
        item_vec=rng.normal(0.0, 1.0, (num_items, d)),
        item_vec_conv=rng.normal(0.0, 1.0, (num_items, d)),
        item_category=category_of_item,
        item_brand=item_brand,
        item_price=np.exp(log_price).astype(np.float32),
        item_price_z=standardize(log_price),
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
        own={name: _own_tables(spec, name) for name in spec.objectives if CATALOGUE[name].own_latent},
    )


def _own_tables(spec: GeneratorSpec, name: str) -> tuple[np.ndarray, np.ndarray]:
    """((U, d), (I, d)) float64 standard-normal user and item tables of objective `name`."""
    rng = own_tables_rng(spec.seed, CATALOGUE[name].stream)
    return (
        rng.normal(0.0, 1.0, (spec.total_users, spec.latent_dim)),
        rng.normal(0.0, 1.0, (spec.total_items, spec.latent_dim)),
    )


@dataclass(frozen=True)
class Impressions:
    """n impressions as (n,) int64 index arrays into the latent tables."""

    user: np.ndarray
    item: np.ndarray
    device: np.ndarray
    hour: np.ndarray


@dataclass(frozen=True)
class Signals:
    """(n,) float64 latent quantities of n impressions, before calibration."""

    click: np.ndarray  # click logit without intercept
    indep: np.ndarray  # conversion signal independent of the click signal
    log_watch: np.ndarray  # log mean watch time without intercept
    own: dict[str, np.ndarray]  # objective name -> its own user.item product (unit variance)


def sample_impressions(
    tables: LatentTables, spec: GeneratorSpec, rng: np.random.Generator, n: int
) -> Impressions:
    """n impressions: Zipf users; items from a preferred category with preferred_category_prob,
    otherwise Zipf-popular; device and hour from their context distributions. A preferred category
    without items (possible on the early days of a multi-day run) falls back to the popular item."""
    user = _draw(rng, tables.user_cdf, n)
    popular_item = _draw(rng, tables.item_cdf, n)
    category = tables.user_pref[user, rng.integers(0, PREFERRED_PER_USER, n)]
    count = tables.category_count[category]
    within = (rng.random(n) * count).astype(np.int64)
    index = np.minimum(tables.category_start[category] + within, tables.items_by_category.shape[0] - 1)
    preferred_item = tables.items_by_category[index]
    from_pref = (rng.random(n) < spec.preferred_category_prob) & (count > 0)
    return Impressions(
        user=user,
        item=np.where(from_pref, preferred_item, popular_item),
        device=_draw(rng, tables.device_cdf, n),
        hour=_draw(rng, tables.hour_cdf, n),
    )


def row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) row-wise dot products of two (n, d) arrays, scaled by 1/sqrt(d) to unit variance."""
    return np.einsum("nd,nd->n", a, b) / math.sqrt(a.shape[1])


def signals(tables: LatentTables, imp: Impressions) -> Signals:
    """Latent click, independent-conversion, log-watch-time and own-objective signals of n impressions."""
    u, i = imp.user, imp.item
    affinity = row_dot(tables.user_vec[u], tables.item_vec[i])
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
    indep = row_dot(tables.user_vec_conv[u], tables.item_vec_conv[i]) - 0.5 * price_z + 0.3 * age_z
    log_watch = (
        0.3 * affinity + 0.25 * match + tables.item_watch[i] + 0.15 * age_z + tables.device_watch[imp.device]
    )
    own = {name: row_dot(user_vec[u], item_vec[i]) for name, (user_vec, item_vec) in tables.own.items()}
    return Signals(click=click, indep=indep, log_watch=log_watch, own=own)
