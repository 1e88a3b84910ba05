"""Every task's metrics through the one streaming path, against scikit-learn on the same rows."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_mtl.metrics.task_streams import TaskStreams
from recsys_mtl.tasks.graph import TaskSpec

TASKS = [
    TaskSpec("click"),
    TaskSpec("cart", label="cart_flag", after="click"),
    TaskSpec("purchase", label="buy", after="cart"),
    TaskSpec("cvr", label="buy", where="click"),
    TaskSpec("stay", type="regression", where="click"),
]


@pytest.fixture(scope="module")
def columns() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 40_000
    p_click, p_cart, p_buy = rng.beta(2, 8, n), rng.beta(2, 5, n), rng.beta(2, 5, n)
    click = (rng.random(n) < p_click).astype(np.float64)
    cart = click * (rng.random(n) < p_cart)
    buy = cart * (rng.random(n) < p_buy)
    stay = click * rng.gamma(2.0, 5.0, n)
    noisy = lambda p: np.clip(p + rng.normal(0, 0.05, n), 1e-4, 1 - 1e-4)  # noqa: E731
    return {
        "click": noisy(p_click), "cart": noisy(p_click * p_cart), "cart_given_click": noisy(p_cart),
        "purchase": noisy(p_click * p_cart * p_buy), "purchase_given_cart": noisy(p_buy),
        "cvr": noisy(p_cart * p_buy), "stay": stay * rng.uniform(0.5, 1.5, n),
        "label_click": click, "label_cart": cart, "label_purchase": buy, "label_cvr": buy, "label_stay": stay,
        "oracle_click": p_click, "oracle_cart_flag_given_click": p_cart,
        "weight": np.r_[np.ones(n - 100), np.zeros(100)],  # the last rows are padding
    }


def test_every_task_is_measured_on_its_space_and_funnel_stages_also_conditionally(columns):
    # imported here: the ranks that mp.spawn starts below import this module, and need no scikit-learn
    from sklearn.metrics import mean_squared_error, roc_auc_score

    streams = TaskStreams(TASKS, set(columns), groups=False)
    half = len(columns["weight"]) // 2
    for part in (slice(0, half), slice(half, None)):  # two batches
        streams.update({k: v[part] for k, v in columns.items()}, np.zeros(len(columns["weight"][part]), np.int64))
    m = streams.metrics()
    real = columns["weight"] > 0
    c = {k: v[real] for k, v in columns.items()}
    clicked, carted = c["label_click"] == 1, c["label_cart"] == 1
    assert m["click"]["auc"] == pytest.approx(roc_auc_score(c["label_click"], c["click"]), abs=1e-4)
    assert m["click"]["oracle_auc"] == pytest.approx(roc_auc_score(c["label_click"], c["oracle_click"]), abs=1e-4)
    assert m["purchase"]["auc"] == pytest.approx(roc_auc_score(c["label_purchase"], c["purchase"]), abs=1e-4)
    assert m["purchase"]["conditional_auc"] == pytest.approx(
        roc_auc_score(c["label_purchase"][carted], c["purchase_given_cart"][carted]), abs=1e-4
    )
    assert m["cart"]["conditional_auc"] == pytest.approx(roc_auc_score(c["label_cart"][clicked], c["cart_given_click"][clicked]), abs=1e-4)
    assert m["cart"]["oracle_conditional_auc"] == pytest.approx(
        roc_auc_score(c["label_cart"][clicked], c["oracle_cart_flag_given_click"][clicked]), abs=1e-4
    )
    assert "conditional_auc_counterfactual" in m["cart"] and "conditional_logloss_counterfactual" not in m["cart"]
    assert m["cart"]["conditional_auc_entire_space"] == pytest.approx(roc_auc_score(c["label_cart"], c["cart_given_click"]), abs=1e-4)
    assert m["cvr"]["auc_entire_space"] == pytest.approx(roc_auc_score(c["label_cvr"], c["cvr"]), abs=1e-4)
    assert "conditional_logloss_entire_space" not in m["cart"]
    assert m["cvr"]["auc"] == pytest.approx(roc_auc_score(c["label_cvr"][clicked], c["cvr"][clicked]), abs=1e-4)
    assert m["stay"]["rmse"] == pytest.approx(mean_squared_error(c["label_stay"][clicked], c["stay"][clicked]) ** 0.5, rel=1e-6)
    assert "oracle_auc" not in m["purchase"]  # the data carries no oracle for it
    assert {"auc", "logloss", "ne", "calibration", "pr_auc"} <= set(m["purchase"])
    assert set(streams.curves()) == {"click", "cart", "cart_given_click", "purchase", "purchase_given_cart", "cvr", "stay"}


def test_a_view_with_non_finite_scores_has_every_metric_nan_and_the_count(columns):
    cols = {k: v.copy() for k, v in columns.items()}
    real = cols["weight"] > 0
    clicked = np.flatnonzero((cols["label_click"] == 1) & real)
    cols["cart_given_click"][clicked[:4]] = np.nan  # 4 rows of the conditional space
    cols["cart_given_click"][np.flatnonzero((cols["label_click"] == 0) & real)[0]] = np.inf  # and one outside it
    cols["click"][:] = np.nan  # every row
    cols["stay"][clicked[0]] = np.inf
    streams = TaskStreams(TASKS, set(cols), groups=True)
    streams.update(cols, np.arange(len(cols["weight"])) % 500)
    m = streams.metrics()
    rows = int(real.sum())
    click = {k: v for k, v in m["click"].items() if not k.startswith("oracle_")}
    assert click.pop("nonfinite_predictions") == rows
    assert {"auc", "logloss", "calibration", "gauc", "gauc_groups"} <= set(click) and all(np.isnan(v) for v in click.values())
    assert np.isfinite(m["click"]["oracle_auc"]) and "oracle_nonfinite_predictions" not in m["click"]
    cart = m["cart"]
    assert cart["conditional_nonfinite_predictions"] == 4 and np.isnan(cart["conditional_auc"])
    assert np.isnan(cart["conditional_logloss"]) and np.isfinite(cart["oracle_conditional_auc"])
    assert cart["conditional_nonfinite_predictions_entire_space"] == 5 and np.isnan(cart["conditional_auc_entire_space"])
    assert np.isfinite(cart["auc"]) and "nonfinite_predictions" not in cart  # the cart output itself is fine
    assert m["stay"]["nonfinite_predictions"] == 1 and np.isnan(m["stay"]["rmse"]) and np.isnan(m["stay"]["xauc"])
    assert np.isfinite(m["purchase"]["auc"])
    curves = streams.curves()
    assert "roc" not in curves["click"] and "roc" not in curves["cart_given_click"] and "roc" in curves["cart"]


def _rank(rank: int, init: str, columns: dict[str, np.ndarray], out: str) -> None:
    """One of two gloo ranks: rank 0's rows have 3 NaN click scores, rank 1's none."""
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        half = len(columns["weight"]) // 2
        part = slice(0, half) if rank == 0 else slice(half, None)
        cols = {k: v[part].copy() for k, v in columns.items()}
        if rank == 0:
            cols["click"][:3] = np.nan
        streams = TaskStreams(TASKS, set(cols), groups=True)
        streams.update(cols, np.arange(len(cols["weight"])) % 100)
        streams.all_reduce()
        click = streams.metrics()["click"]
        with open(f"{out}.{rank}", "w") as f:
            json.dump({k: None if np.isnan(v) else v for k, v in click.items()}, f)
    finally:
        dist.destroy_process_group()


def test_the_non_finite_count_is_summed_over_ranks(columns, tmp_path):
    import json

    import torch.multiprocessing as mp

    small = {k: v[:4000] for k, v in columns.items()}
    mp.spawn(_rank, args=(f"file://{tmp_path / 'store'}", small, str(tmp_path / "click")), nprocs=2)
    for rank in (0, 1):  # the rank whose rows were all finite knows too
        click = json.loads((tmp_path / f"click.{rank}").read_text())
        assert click["nonfinite_predictions"] == 3
        assert click["auc"] is None and click["logloss"] is None and click["gauc"] is None
        assert click["oracle_auc"] is not None
