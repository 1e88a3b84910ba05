from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recsys_mtl.tasks.heads import TaskSpec, esmm_log_probs, log1mexp, predict, task_losses, tower_names

ALL = [TaskSpec("ctr", "ctr"), TaskSpec("ctcvr", "ctcvr"), TaskSpec("wt", "watch_time")]


def test_esmm_identity_pctcvr_is_pctr_times_pcvr():
    torch.manual_seed(0)
    logits = {"ctr": torch.randn(1000) * 4, "cvr": torch.randn(1000) * 4, "watch_time": torch.randn(1000)}
    out = predict(ALL, logits)
    torch.testing.assert_close(out["pctcvr"], out["pctr"] * out["pcvr"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["watch_time"], torch.exp(logits["watch_time"]))


def test_esmm_log_probs_stay_finite_at_extreme_logits():
    a = torch.tensor([-100.0, -30.0, 0.0, 30.0, 100.0, 100.0])
    b = torch.tensor([-100.0, 5.0, 0.0, 30.0, 100.0, -100.0])
    log_p, log_q = esmm_log_probs(a, b)
    assert torch.isfinite(log_p).all() and torch.isfinite(log_q).all()
    torch.testing.assert_close(log_p[0], torch.tensor(-200.0))  # no underflow to -inf
    ref = torch.log(torch.sigmoid(a.double()) * torch.sigmoid(b.double()))
    torch.testing.assert_close(log_p[:4].double(), ref[:4], rtol=1e-5, atol=1e-6)


def test_log1mexp_matches_float64_reference():
    x = -torch.logspace(-6, 2, 200, dtype=torch.float64)
    ref = torch.log(1 - torch.exp(x))
    torch.testing.assert_close(log1mexp(x.float()).double(), ref, rtol=1e-5, atol=1e-6)


def test_ctcvr_loss_is_bce_on_the_product_over_all_rows():
    torch.manual_seed(1)
    a, b = torch.randn(64), torch.randn(64)
    click = (torch.rand(64) < 0.5).float()
    conv = click * (torch.rand(64) < 0.5).float()
    w = torch.ones(64)
    got = task_losses([TaskSpec("c", "ctcvr")], {"ctr": a, "cvr": b}, {"click": click, "conversion": conv}, w)["c"]
    p = torch.sigmoid(a) * torch.sigmoid(b)
    torch.testing.assert_close(got, F.binary_cross_entropy(p, conv), rtol=1e-5, atol=1e-6)


def test_click_only_cvr_ignores_unclicked_rows_and_padding_counts_nowhere():
    click = torch.tensor([1.0, 1.0, 0.0, 0.0])
    conv = torch.tensor([1.0, 0.0, 0.0, 0.0])
    logit = torch.tensor([2.0, -1.0, 50.0, -50.0])
    spec = [TaskSpec("cvr", "cvr")]
    got = task_losses(spec, {"cvr": logit}, {"click": click, "conversion": conv}, torch.ones(4))["cvr"]
    want = F.binary_cross_entropy_with_logits(logit[:2], conv[:2])
    torch.testing.assert_close(got, want)
    padded = task_losses(
        spec, {"cvr": torch.cat([logit, torch.tensor([9.0])])},
        {"click": torch.cat([click, torch.ones(1)]), "conversion": torch.cat([conv, torch.zeros(1)])},
        torch.tensor([1.0, 1, 1, 1, 0]),
    )["cvr"]
    torch.testing.assert_close(padded, want)


def test_weighted_logistic_optimum_is_expected_watch_time_odds():
    # For a constant logit z the weighted BCE is minimised where odds = sum(T of clicks) / non-clicks:
    # exp(z*) estimates the expected watch time per impression (YouTube, Covington et al. 2016).
    click = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    seconds = torch.tensor([30.0, 90.0, 0, 0, 0, 0, 0, 0])
    z = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([z], lr=0.5, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = task_losses([TaskSpec("wt", "watch_time")], {"watch_time": z.expand(8)}, {"click": click, "watch_time": seconds}, torch.ones(8))["wt"]
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(z.exp().detach(), torch.tensor(120.0 / 6), rtol=1e-3, atol=1e-3)


def test_log1p_regression_predicts_expm1():
    spec = [TaskSpec("wt", "watch_time", loss="log1p_mse")]
    out = torch.tensor([0.0, math.log1p(59.0), -3.0])
    torch.testing.assert_close(predict(spec, {"watch_time": out})["watch_time"], torch.tensor([0.0, 59.0, 0.0]))
    loss = task_losses(spec, {"watch_time": out[:2]}, {"watch_time": torch.tensor([0.0, 59.0])}, torch.ones(2))["wt"]
    torch.testing.assert_close(loss, torch.tensor(0.0))


@pytest.mark.parametrize(
    ("kinds", "towers"),
    [(["ctr"], ["ctr"]), (["ctr", "ctcvr"], ["ctr", "cvr"]), (["watch_time", "ctr", "cvr"], ["ctr", "cvr", "watch_time"])],
)
def test_tower_names_follow_the_tasks(kinds, towers):
    assert tower_names([TaskSpec(k, k) for k in kinds]) == towers
