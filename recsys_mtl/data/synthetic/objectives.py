"""The latent model of every objective: calibration of the intercepts, true values, label draws, oracles.

For n impressions with signals `latent.Signals`, `truth` gives each objective's true value, float64 (n,):

* click: p(click) = sigmoid(b_click + click signal);
* an after-click binary: p(label | click) = sigmoid(b + scale · Σ weight · z_signal);
* an entire-space binary other than click (share): p(label), the same form;
* watch_time: E[T | click] = exp(b_watch + log watch signal); T = 0 without a click.

z_signal is the signal standardized with the calibration sample's mean and std. The intercepts are
fitted once per spec on the calibration sample (`calibrate`), so every part file shares them and the
realised rates hit the targets (`target`). The classic objectives keep their original formulas, draws
and streams bit for bit; every other objective draws from its own stream (`streams.label_rng`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recsys_mtl.data.synthetic.catalogue import CATALOGUE, Mix
from recsys_mtl.data.synthetic.latent import LatentTables, Signals, sample_impressions, sigmoid, signals
from recsys_mtl.data.synthetic.spec import GeneratorSpec
from recsys_mtl.data.synthetic.streams import calibration_rng

# Logit scale of the mixed (unit-variance) signal of the binaries other than click.
_SIGNAL_SCALE = 1.0
# Log-scale noise of the watch time around its conditional mean.
WATCH_TIME_SIGMA = 0.7


@dataclass(frozen=True)
class Calibration:
    """Constants shared by every file of one spec.

    stats: signal key -> (mean, std) on the calibration sample; keys "click", "indep", "watch" and
        "own_<objective>" for each objective with its own latent product.
    intercepts: objective name -> logit intercept (binary) or log-mean intercept (watch_time), for
        click and every objective of the spec.
    """

    stats: dict[str, tuple[float, float]]
    intercepts: dict[str, float]


def target(name: str, spec: GeneratorSpec) -> float:
    """The calibration target of objective `name`: rate (entire space), rate given click (after
    click) or mean seconds given click (watch_time)."""
    obj = CATALOGUE[name]
    return obj.target if obj.target is not None else float(getattr(spec, obj.target_field))


def _mix(name: str, spec: GeneratorSpec) -> Mix:
    """(signal, weight) pairs of a binary objective other than click."""
    mix = CATALOGUE[name].mix
    if mix is None:  # conversion: task_corr dials how much it shares with click
        return (("click", spec.task_corr), ("indep", math.sqrt(max(0.0, 1.0 - spec.task_corr**2))))
    return mix


def _signal(sig: Signals, key: str, name: str) -> tuple[str, np.ndarray]:
    """(stats key, (n,) raw signal) of mix entry `key` of objective `name`."""
    if key == "own":
        return f"own_{name}", sig.own[name]
    return key, {"click": sig.click, "indep": sig.indep, "watch": sig.log_watch}[key]


def _mixed_logit(
    name: str, sig: Signals, stats: dict[str, tuple[float, float]], spec: GeneratorSpec
) -> np.ndarray:
    """(n,) logit without intercept of a binary objective other than click: scale · Σ weight · z."""
    total: np.ndarray | None = None
    for key, weight in _mix(name, spec):
        stats_key, raw = _signal(sig, key, name)
        mean, std = stats[stats_key]
        term = weight * ((raw - mean) / std)
        total = term if total is None else total + term
    assert total is not None, name
    return _SIGNAL_SCALE * total


def _bisect_increasing(f: Callable[[float], float], goal: float, lo: float, hi: float) -> float:
    """x in [lo, hi] with f(x) = goal for an increasing f, to float64 precision."""
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if f(mid) < goal:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _stats(x: np.ndarray) -> tuple[float, float]:
    """(mean, std) of (n,) x; a zero std is reported as 1 so standardizing never divides by 0."""
    return float(x.mean()), float(x.std()) or 1.0


def _rate(logit: np.ndarray, pctr: np.ndarray | None) -> Callable[[float], float]:
    """intercept -> realised rate of (n,) `logit`: the mean probability, or with (n,) `pctr` the
    click-weighted mean (the rate given click)."""
    if pctr is None:
        return lambda b: float(sigmoid(b + logit).mean())
    return lambda b: float(np.sum(pctr * sigmoid(b + logit)) / np.sum(pctr))


def calibrate(tables: LatentTables, spec: GeneratorSpec) -> Calibration:
    """Fit the intercepts on a fixed sample of calibration_rows impressions so that every objective's
    rate (entire space), rate given click (after click) or E[T | click] (watch_time) is its target."""
    sig = signals(tables, sample_impressions(tables, spec, calibration_rng(spec.seed), spec.calibration_rows))
    stats = {"click": _stats(sig.click), "indep": _stats(sig.indep), "watch": _stats(sig.log_watch)}
    stats.update({f"own_{name}": _stats(own) for name, own in sig.own.items()})
    click_intercept = _bisect_increasing(
        lambda b: float(sigmoid(b + sig.click).mean()), spec.target_ctr, -40.0, 40.0
    )
    pctr = sigmoid(click_intercept + sig.click)
    intercepts = {"click": click_intercept}
    for name in spec.objectives:
        obj, goal = CATALOGUE[name], target(name, spec)
        if name == "click":
            continue
        if obj.kind == "watch_time":
            clicked_mean = float(np.sum(pctr * np.exp(sig.log_watch)) / np.sum(pctr))
            intercepts[name] = math.log(goal) - math.log(clicked_mean)
            continue
        rate = _rate(_mixed_logit(name, sig, stats, spec), pctr if obj.after == "click" else None)
        intercepts[name] = _bisect_increasing(rate, goal, -40.0, 40.0)
    return Calibration(stats=stats, intercepts=intercepts)


def truth(sig: Signals, cal: Calibration, spec: GeneratorSpec) -> dict[str, np.ndarray]:
    """(n,) float64 true values of click and of every objective of the spec (see the module doc)."""
    out = {"click": sigmoid(cal.intercepts["click"] + sig.click)}
    for name in spec.objectives:
        if name == "click":
            continue
        b = cal.intercepts[name]
        if CATALOGUE[name].kind == "watch_time":
            out[name] = np.exp(b + sig.log_watch)
        else:
            out[name] = sigmoid(b + _mixed_logit(name, sig, cal.stats, spec))
    return out


def draw_labels(
    true: dict[str, np.ndarray],
    spec: GeneratorSpec,
    rng: np.random.Generator,
    own_rng: Callable[[int], np.random.Generator],
) -> dict[str, np.ndarray]:
    """(n,) labels of the spec's objectives: bool for binaries, float64 seconds for watch_time.

    `rng` is the part file's classic stream, positioned after the impressions: the click, conversion
    and watch-time noise draws are always taken from it in that order (whichever objectives are
    written), so those columns never depend on the objective list. `own_rng(stream)` gives the
    stream of every other objective's draws.
    """
    n = true["click"].shape[0]
    u_click, u_conversion = rng.random(n), rng.random(n)
    # Mean-preserving LogNormal: E[T | click, x] = watch_mean exactly, and T > 0 always.
    noise = np.exp(WATCH_TIME_SIGMA * rng.standard_normal(n) - 0.5 * WATCH_TIME_SIGMA**2)
    click = u_click < true["click"]
    labels: dict[str, np.ndarray] = {}
    for name in spec.objectives:
        obj = CATALOGUE[name]
        if name == "click":
            labels[name] = click
        elif obj.kind == "watch_time":
            labels[name] = np.where(click, true[name] * noise, 0.0)
        else:
            u = u_conversion if obj.stream == 0 else own_rng(obj.stream).random(n)
            hit = u < true[name]
            labels[name] = click & hit if obj.after == "click" else hit
    return labels


def oracles(true: dict[str, np.ndarray], spec: GeneratorSpec) -> dict[str, np.ndarray]:
    """(n,) float32 oracle columns by name: ``oracle_<name>`` (entire-space probability or E[label])
    and, for objectives that need a click, ``oracle_<name>_given_click`` (conditional probability or
    E[T | click]). An after-click entire-space oracle is the product of the stored float32 click and
    conditional values, so that identity holds exactly on disk."""
    pctr32 = true["click"].astype(np.float32)
    out: dict[str, np.ndarray] = {}
    for name in spec.objectives:
        obj = CATALOGUE[name]
        if name == "click":
            out["oracle_click"] = pctr32
        elif obj.kind == "watch_time":
            out[f"oracle_{name}"] = (true["click"] * true[name]).astype(np.float32)
            out[f"oracle_{name}_given_click"] = true[name].astype(np.float32)
        elif obj.after == "click":
            conditional32 = true[name].astype(np.float32)
            out[f"oracle_{name}"] = pctr32 * conditional32
            out[f"oracle_{name}_given_click"] = conditional32
        else:
            out[f"oracle_{name}"] = true[name].astype(np.float32)
    return out
