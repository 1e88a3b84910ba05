"""Task losses and predictions from tower logits (pure functions of tensors; no config import).

A task is described by ``TaskSpec`` (name, kind, weight, loss). Towers: ``ctr`` (click logit),
``cvr`` (conversion-given-click logit), ``watch_time`` (WLR logit or log1p regression output).
All losses are means over real rows: ``weights`` is 0 on padding rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TOWERS_OF_KIND = {"ctr": ("ctr",), "ctcvr": ("ctr", "cvr"), "cvr": ("cvr",), "watch_time": ("watch_time",)}
TOWER_ORDER = ("ctr", "cvr", "watch_time")
_LOG_HALF = -math.log(2.0)
_MAX_LOG_P = -1e-7  # keeps log(1 - p) finite when p rounds to 1


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # ctr | ctcvr | cvr | watch_time
    weight: float = 1.0
    loss: str = "weighted_logistic"  # watch_time only: weighted_logistic | log1p_mse | mse

    @property
    def is_regression(self) -> bool:
        """A squared-error loss (Gaussian likelihood) rather than a logistic one."""
        return self.kind == "watch_time" and self.loss in ("log1p_mse", "mse")


def tower_names(tasks: list[TaskSpec]) -> list[str]:
    """The towers the tasks need, in a fixed order."""
    needed = {t for task in tasks for t in TOWERS_OF_KIND[task.kind]}
    return [t for t in TOWER_ORDER if t in needed]


def log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(log_p)) for log_p < 0, accurate on both sides of log 1/2 (Maechler, 2012)."""
    return torch.where(log_p > _LOG_HALF, torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p)))


def esmm_log_probs(ctr_logit: torch.Tensor, cvr_logit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pCTCVR, log(1 - pCTCVR)) with pCTCVR = sigmoid(ctr) * sigmoid(cvr), computed in log space
    so neither a tiny product nor one near 1 loses precision. ``[B], [B] -> [B], [B]``"""
    log_p = (F.logsigmoid(ctr_logit) + F.logsigmoid(cvr_logit)).clamp(max=_MAX_LOG_P)
    return log_p, log1mexp(log_p)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def task_losses(
    tasks: list[TaskSpec], logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], weights: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``{task: scalar loss}`` (unweighted by task weight). Shapes: logits/labels/weights ``[B]``."""
    out = {}
    for task in tasks:
        if task.kind == "ctr":
            bce = F.binary_cross_entropy_with_logits(logits["ctr"], labels["click"], reduction="none")
            out[task.name] = _weighted_mean(bce, weights)
        elif task.kind == "ctcvr":
            # ESMM: the label of the impression is click AND conversion; loss over all impressions
            y = labels["click"] * labels["conversion"]
            log_p, log_q = esmm_log_probs(logits["ctr"], logits["cvr"])
            out[task.name] = _weighted_mean(-(y * log_p + (1 - y) * log_q), weights)
        elif task.kind == "cvr":
            # the click-only baseline: conversion given click, trained on clicked rows only
            bce = F.binary_cross_entropy_with_logits(logits["cvr"], labels["conversion"], reduction="none")
            out[task.name] = _weighted_mean(bce, weights * labels["click"])
        elif task.loss == "weighted_logistic":
            # YouTube WLR: clicked rows are positives weighted by watch time, the rest negatives of
            # weight 1, so the learned odds exp(logit) estimate the expected watch time
            click, seconds = labels["click"], labels["watch_time"]
            bce = F.binary_cross_entropy_with_logits(logits["watch_time"], click, reduction="none")
            importance = torch.where(click > 0, seconds, torch.ones_like(seconds))
            out[task.name] = _weighted_mean(bce * importance, weights)
        elif task.loss == "log1p_mse":
            err = (logits["watch_time"] - torch.log1p(labels["watch_time"])) ** 2
            out[task.name] = _weighted_mean(err, weights)
        else:
            err = (logits["watch_time"] - labels["watch_time"]) ** 2
            out[task.name] = _weighted_mean(err, weights)
    return out


def predict(tasks: list[TaskSpec], logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model outputs by name: ``pctr``, ``pcvr``, ``pctcvr`` (pCTR x pCVR when both towers exist) and
    ``watch_time`` (expected seconds per impression), as the tasks provide. ``{tower: [B]} -> {name: [B]}``"""
    out = {}
    if "ctr" in logits:
        out["pctr"] = torch.sigmoid(logits["ctr"])
    if "cvr" in logits:
        out["pcvr"] = torch.sigmoid(logits["cvr"])
        if "ctr" in logits:
            out["pctcvr"] = torch.exp(esmm_log_probs(logits["ctr"], logits["cvr"])[0])
    for task in tasks:
        if task.kind == "watch_time":
            raw = logits["watch_time"]
            if task.loss == "weighted_logistic":
                out["watch_time"] = torch.exp(raw)
            elif task.loss == "log1p_mse":
                out["watch_time"] = torch.expm1(raw).clamp(min=0)
            else:
                out["watch_time"] = raw.clamp(min=0)
    return out


def ranking_score(outputs: dict[str, torch.Tensor], exponents: dict[str, float]) -> torch.Tensor:
    """``Π_k term_k ** exponent_k`` over the outputs present (term: the probability, or 1 + seconds
    for ``watch_time``), computed in log space. ``{name: [B]} -> [B]``"""
    first = next(iter(outputs.values()))
    log_score = torch.zeros_like(first)
    for name, exponent in exponents.items():
        if name in outputs and exponent:
            value = outputs[name]
            term = torch.log1p(value) if name == "watch_time" else torch.log(value.clamp(min=1e-30))
            log_score = log_score + exponent * term
    return torch.exp(log_score)
