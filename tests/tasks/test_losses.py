"""Losses and outputs driven by the task list (docs/tasks.md), checked against direct formulas."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from recsys_mtl.tasks.graph import TaskSpec, output_names, probability_outputs
from recsys_mtl.tasks.losses import log1mexp, task_losses
from recsys_mtl.tasks.outputs import predict, ranking_score

FUNNEL = [
    TaskSpec("click"),
    TaskSpec("cart", after="click"),
    TaskSpec("purchase", label="buy_flag", after="cart"),
]


def test_three_stage_funnel_predicts_the_product_of_its_conditionals():
    torch.manual_seed(0)
    logits = {t.name: torch.randn(500) * 4 for t in FUNNEL}
    out = predict(FUNNEL, logits)
    assert list(out) == output_names(FUNNEL) == ["click", "cart", "cart_given_click", "purchase", "purchase_given_cart"]
    pc, pa, pp = (torch.sigmoid(logits[n].double()) for n in ("click", "cart", "purchase"))
    torch.testing.assert_close(out["cart"].double(), pc * pa, rtol=1e-5, atol=0)
    torch.testing.assert_close(out["purchase"].double(), pc * pa * pp, rtol=1e-5, atol=0)
    torch.testing.assert_close(out["purchase_given_cart"], torch.sigmoid(logits["purchase"]))
    assert probability_outputs(FUNNEL) == set(out)


def test_depth_three_is_exact_for_tiny_probabilities():
    # three conditionals of ~e-30 each: the product (~e-90) underflows float32 if multiplied directly
    logits = {name: torch.tensor([-30.0, -60.0]) for name in ("click", "cart", "purchase")}
    out = predict(FUNNEL, logits)
    ref = torch.exp(3 * F.logsigmoid(torch.tensor([-30.0, -60.0], dtype=torch.float64)))
    torch.testing.assert_close(out["purchase"][:1].double(), ref[:1], rtol=1e-5, atol=0)
    loss = task_losses(FUNNEL, logits, {n: torch.tensor([1.0, 1.0]) for n in ("click", "cart", "purchase")}, torch.ones(2))
    # -log p of a positive is the exact sum of the chain's -log sigmoid terms
    want = -(3 * F.logsigmoid(torch.tensor([-30.0, -60.0], dtype=torch.float64))).mean()
    torch.testing.assert_close(loss["purchase"].double(), want, rtol=1e-5, atol=0)
    assert all(torch.isfinite(v) for v in loss.values())


def test_funnel_stage_loss_is_bce_of_the_product_on_every_row():
    torch.manual_seed(1)
    logits = {t.name: torch.randn(64) for t in FUNNEL}
    click = (torch.rand(64) < 0.5).float()
    cart = click * (torch.rand(64) < 0.5).float()
    buy = cart * (torch.rand(64) < 0.5).float()
    labels = {"click": click, "cart": cart, "purchase": buy}
    got = task_losses(FUNNEL, logits, labels, torch.ones(64))
    p = torch.sigmoid(logits["click"]) * torch.sigmoid(logits["cart"]) * torch.sigmoid(logits["purchase"])
    torch.testing.assert_close(got["purchase"], F.binary_cross_entropy(p, buy), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["click"], F.binary_cross_entropy_with_logits(logits["click"], click))


def test_log1mexp_matches_float64_reference():
    x = -torch.logspace(-6, 2, 200, dtype=torch.float64)
    torch.testing.assert_close(log1mexp(x.float()).double(), torch.log(1 - torch.exp(x)), rtol=1e-5, atol=1e-6)


def test_where_takes_the_loss_on_the_parents_positive_rows_and_padding_counts_nowhere():
    tasks = [TaskSpec("click"), TaskSpec("cvr", label="conversion", where="click")]
    click = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0])
    conv = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    logits = {"click": torch.zeros(5), "cvr": torch.tensor([2.0, -1.0, 50.0, -50.0, 9.0])}
    weights = torch.tensor([1.0, 1, 1, 1, 0])  # the last row is padding
    got = task_losses(tasks, logits, {"click": click, "cvr": conv}, weights)["cvr"]
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(logits["cvr"][:2], conv[:2]))
    assert set(predict(tasks, logits)) == {"click", "cvr"}  # a where task's output is already conditional


def test_weight_column_weighs_rows():
    tasks = [TaskSpec("click", weight_column="w")]
    logit, y = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    sample = torch.tensor([2.0, 0.0, 1.0])
    got = task_losses(tasks, {"click": logit}, {"click": y}, torch.ones(3), {"click": sample})["click"]
    bce = F.binary_cross_entropy_with_logits(logit, y, reduction="none")
    torch.testing.assert_close(got, (bce * sample).sum() / sample.sum())


def test_weighted_logistic_optimum_is_the_expected_label_in_label_units():
    # for a constant logit z the weighted BCE is minimised where odds = Σ scaled labels / negatives:
    # exp(z*) estimates E[scale x label] (YouTube, Covington et al. 2016); the output divides scale out
    tasks = [TaskSpec("watch", type="weighted_logistic", scale=0.001)]
    ms = torch.tensor([30_000.0, 90_000.0, 0, 0, 0, 0, 0, 0])
    z = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([z], lr=0.5, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = task_losses(tasks, {"watch": z.expand(8)}, {"watch": ms}, torch.ones(8))["watch"]
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(z.exp().detach(), torch.tensor(120.0 / 6), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(predict(tasks, {"watch": z.detach().reshape(1)})["watch"], torch.tensor([20_000.0]), rtol=1e-3, atol=0)


def test_regression_fits_the_transformed_scaled_label_and_predicts_label_units():
    tasks = [TaskSpec("stay", type="regression", transform="log1p", scale=0.001)]
    out = torch.tensor([0.0, math.log1p(59.0), -3.0])
    torch.testing.assert_close(predict(tasks, {"stay": out})["stay"], torch.tensor([0.0, 59_000.0, 0.0]))
    loss = task_losses(tasks, {"stay": out[:2]}, {"stay": torch.tensor([0.0, 59_000.0])}, torch.ones(2))["stay"]
    torch.testing.assert_close(loss, torch.tensor(0.0))
    plain = [TaskSpec("stay", type="regression")]
    got = task_losses(plain, {"stay": torch.tensor([1.0, 3.0])}, {"stay": torch.tensor([2.0, 1.0])}, torch.ones(2))["stay"]
    torch.testing.assert_close(got, torch.tensor(2.5))


def test_two_independent_binary_tasks_are_two_bce_losses():
    tasks = [TaskSpec("income"), TaskSpec("never_married")]
    torch.manual_seed(2)
    logits = {t.name: torch.randn(32) for t in tasks}
    labels = {t.name: (torch.rand(32) < 0.3).float() for t in tasks}
    got = task_losses(tasks, logits, labels, torch.ones(32))
    for t in tasks:
        torch.testing.assert_close(got[t.name], F.binary_cross_entropy_with_logits(logits[t.name], labels[t.name]))


def test_ranking_product_of_powers_and_weighted_sum():
    outputs = {"click": torch.tensor([0.1, 0.5]), "like": torch.tensor([0.2, 0.04]), "watch": torch.tensor([9.0, 0.0])}
    probs = {"click", "like"}
    product = ranking_score(outputs, probs, "product", {"click": 1.0, "like": 0.5, "watch": 0.5})
    torch.testing.assert_close(product, outputs["click"] * outputs["like"].sqrt() * (1 + outputs["watch"]).sqrt())
    total = ranking_score(outputs, probs, "sum", {"click": 2.0, "watch": 0.1})
    torch.testing.assert_close(total, 2 * outputs["click"] + 0.1 * outputs["watch"])
