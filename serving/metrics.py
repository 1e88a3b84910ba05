"""Prometheus metrics of the scoring server (SPEC §6), correct with several uvicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``recsys-mtl serve --workers N`` sets it), every worker writes
its samples to files there and ``/metrics`` aggregates all workers' files (prometheus_client's
multiprocess mode); otherwise the metrics live in this process's own registry.

Scored candidates, per output of the served model (named by task, docs/tasks.md):
``recsys_predicted_probability{output}`` for probability outputs (binary tasks' ``<task>`` and funnel
stages' ``<task>_given_<after>``), ``recsys_predicted_value{output}`` for expected label values
(regression / weighted-logistic tasks, log-spaced buckets), and ``recsys_ranking_score``.
"""

from __future__ import annotations

import os
from collections.abc import Collection

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from recsys_mtl.tasks.graph import SCORE

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
CANDIDATE_BUCKETS = (1, 5, 10, 25, 50, 100, 200, 300, 500, 750, 1000, 2000, 5000)
PROBABILITY_BUCKETS = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
# expected label values (seconds, counts, amounts; in the label column's units, so also milliseconds):
# 1-3 steps from 0.01 to 10^6
VALUE_BUCKETS = tuple(float(f"{m}e{e}") for e in range(-2, 6) for m in (1, 3)) + (1e6,)
# the ranking score: a product of probabilities (and 1 + values) or a weighted sum, so below and above 1
SCORE_BUCKETS = (*PROBABILITY_BUCKETS, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 300.0, 1e3, 1e4, 1e5)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def observe_many(histogram, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for every value, as one bucket count per bucket (a per-value Python call
    for each of 500 candidates would cost more than the model)."""
    values = values[~np.isnan(values)]  # observe() counts a NaN in no bucket
    bounds = histogram._upper_bounds  # the bucket bounds, +Inf last
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(values.sum()))


class ServerMetrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        # in multiprocess mode the samples go to files; this registry only keeps the names unique
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "recsys_http_requests", "HTTP requests by route, method and status class", ["route", "method", "status"], registry=r
        )
        self.http_latency = Histogram(
            "recsys_http_request_duration_seconds", "HTTP handling time (body read to response)", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.model_latency = Histogram(
            "recsys_model_duration_seconds",
            "model time per scoring request: stage=features (encoding) or forward (network and outputs)",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.candidates = Histogram(
            "recsys_candidates_per_request", "candidates in each scored request", buckets=CANDIDATE_BUCKETS, registry=r
        )
        self.probability = Histogram(
            "recsys_predicted_probability",
            "scored candidates' predicted probabilities by output (binary tasks' <task> and <task>_given_<after>)",
            ["output"], buckets=PROBABILITY_BUCKETS, registry=r,
        )
        self.value = Histogram(
            "recsys_predicted_value",
            "scored candidates' expected label values by output (regression / weighted-logistic tasks, in the "
            "label column's units)",
            ["output"], buckets=VALUE_BUCKETS, registry=r,
        )
        self.ranking_score = Histogram(
            "recsys_ranking_score", "scored candidates' combined ranking score", buckets=SCORE_BUCKETS, registry=r
        )
        self.errors = Counter("recsys_errors", "refused or failed requests by reason", ["reason"], registry=r)
        self.reloads = Counter(
            "recsys_model_reloads", "model version switches by result (loaded, rejected)", ["result"], registry=r
        )
        self.model_info = Gauge(
            "recsys_model_info", "1 for the model version a worker serves", ["version"],
            multiprocess_mode="liveall", registry=r,
        )
        # labels: only the served model's feature names (requests naming others are refused)
        self.missing_features = Counter(
            "recsys_missing_features",
            "scored candidates without a feature (absent or null; a request-level feature counts once per "
            "candidate), by feature: divide by recsys_candidates_per_request_sum for the missing share",
            ["feature"], registry=r,
        )

    def observe_outputs(self, outputs: dict[str, np.ndarray], probabilities: Collection[str]) -> None:
        """``outputs``: a scorer's ``{output: [C]}``; ``probabilities``: which of them are probabilities
        (``Scorer.probabilities``); the other task outputs are expected values, ``score`` the ranking score."""
        for name, values in outputs.items():
            if name == SCORE:
                observe_many(self.ranking_score, values)
            elif name in probabilities:
                observe_many(self.probability.labels(name), values)
            else:
                observe_many(self.value.labels(name), values)

    def serving(self, version: str, previous: str | None) -> None:
        if previous is not None:  # set to 0, not removed: a removed label would live on in worker files
            self.model_info.labels(previous).set(0)
        self.model_info.labels(version).set(1)

    def exposition(self) -> tuple[bytes, str]:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def worker_exit(self) -> None:
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())
