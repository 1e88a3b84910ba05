"""Multi-day runs: who exists on each day and how popular, as per-day views of one set of latent tables.

A run of `spec.days` > 1 days draws one set of latent tables for every user and item of every day
(`latent.build_tables` sizes them with spec.total_users and spec.total_items), so an id keeps its
latent factors and attributes, and therefore the true value of every objective for a given
(user, item, device, hour), on every day. What changes from day to day is who is served:

* users: ids 0 .. users_on_day(d) - 1 exist on day d. Day 1's popularity ranks are a random
  permutation (Zipf with user_zipf_exponent, as in a single-day run); each later day inserts its new
  users at random ranks spread evenly (stratified) over all ranks, so the new users' share of the
  traffic is close to their share of the users. Existing users keep their relative order.
* items: ids 0 .. items_on_day(d) - 1. Day 1 as for users; each later day first reshuffles the
  ranks of a random share `popularity_drift` of the existing items among themselves (so the Spearman
  correlation of the existing items' popularity from one day to the next is about
  1 - popularity_drift), then inserts the day's new items at random places spread evenly
  (stratified) over the top FRESH_TOP_SHARE · items_on_day(d) existing ranks: fresh content is
  pushed.
* the preferred-category route (`latent.sample_impressions`) serves only items that exist that day.

The calibration (intercepts, signal standardization) is fitted once, on day 1's view, and shared by
every day (`write.generate`), so the latent model is the same on every day. Day d's ranks come from
the [seed, 6, d] stream (`streams.popularity_rng`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from recsys_mtl.data.synthetic.latent import LatentTables, _cdf
from recsys_mtl.data.synthetic.spec import GeneratorSpec
from recsys_mtl.data.synthetic.streams import popularity_rng

# New items enter at uniformly random ranks within this top share of the day's item ranks.
FRESH_TOP_SHARE = 0.25


@dataclass(frozen=True)
class Day:
    """One day of a multi-day run: who exists and in which popularity order.

    user_order and item_order list the ids that exist that day, most popular first: the id at
    position k has Zipf weight 1 / (k + 1)^exponent.
    """

    day: int  # 1-based
    users: int  # ids 0 .. users - 1 exist
    items: int  # ids 0 .. items - 1 exist
    new_users: int  # ids users - new_users .. users - 1 are new today
    new_items: int
    user_order: np.ndarray  # (users,) int64
    item_order: np.ndarray  # (items,) int64


def _insert(rng: np.random.Generator, order: np.ndarray, new_ids: np.ndarray, top: int) -> np.ndarray:
    """`order` with `new_ids` (in random order) inserted at random positions in [0, top], stratified:
    the k-th of n lands uniformly in the k-th n-th of the range, so the new ids' total weight is
    close to its expectation (one unlucky id at the very top would otherwise dominate a Zipf)."""
    n = new_ids.shape[0]
    positions = np.floor((np.arange(n) + rng.random(n)) * ((top + 1) / max(n, 1))).astype(np.int64)
    positions = np.minimum(positions, top)
    return np.insert(order, positions, rng.permutation(new_ids)).astype(np.int64)


def _drift(rng: np.random.Generator, order: np.ndarray, share: float) -> np.ndarray:
    """`order` with the ids at a random share of its positions permuted among those positions."""
    out = order.copy()
    positions = rng.choice(order.shape[0], round(share * order.shape[0]), replace=False)
    out[positions] = order[rng.permutation(positions)]
    return out


def plan_days(spec: GeneratorSpec) -> list[Day]:
    """The spec's days, 1 .. spec.days, with their populations and popularity orders (module doc)."""
    rng = popularity_rng(spec.seed, 1)
    users = rng.permutation(spec.num_users).astype(np.int64)
    items = rng.permutation(spec.num_items).astype(np.int64)
    days = [Day(1, spec.num_users, spec.num_items, 0, 0, users, items)]
    for day in range(2, spec.days + 1):
        rng = popularity_rng(spec.seed, day)
        num_users, num_items = spec.users_on_day(day), spec.items_on_day(day)
        new_users = np.arange(spec.users_on_day(day - 1), num_users, dtype=np.int64)
        new_items = np.arange(spec.items_on_day(day - 1), num_items, dtype=np.int64)
        users = _insert(rng, users, new_users, users.shape[0])
        items = _drift(rng, items, spec.popularity_drift)
        items = _insert(rng, items, new_items, min(items.shape[0], round(FRESH_TOP_SHARE * num_items)))
        days.append(Day(day, num_users, num_items, new_users.shape[0], new_items.shape[0], users, items))
    return days


def zipf_weights(order: np.ndarray, exponent: float) -> np.ndarray:
    """(n,) float64 weights by id of the n ids in `order` (most popular first): 1 / (rank + 1)^exponent."""
    weights = np.empty(order.shape[0], dtype=np.float64)
    weights[order] = 1.0 / np.arange(1, order.shape[0] + 1, dtype=np.float64) ** exponent
    return weights


def day_tables(tables: LatentTables, spec: GeneratorSpec, day: Day) -> LatentTables:
    """`tables` as served on `day`: user and item popularity over the ids that exist that day, and the
    preferred-category index restricted to those items. Every per-id parameter is unchanged."""
    items_by_category = tables.items_by_category[tables.items_by_category < day.items]
    category_count = np.bincount(
        tables.item_category[: day.items], minlength=tables.category_count.shape[0]
    ).astype(np.int64)
    category_start = np.concatenate([[0], np.cumsum(category_count)[:-1]]).astype(np.int64)
    return replace(
        tables,
        user_cdf=_cdf(zipf_weights(day.user_order, spec.user_zipf_exponent)),
        item_cdf=_cdf(zipf_weights(day.item_order, spec.item_zipf_exponent)),
        items_by_category=items_by_category,
        category_start=category_start,
        category_count=category_count,
    )
