"""p50/p99 of a callable, after warm-up (the benchmarks' one way of timing a forward)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch


def latency_ms(fn: Callable[[], object], repeats: int = 200, warmup: int = 20) -> tuple[float, float]:
    """p50, p99 of ``fn()`` in ms, under inference mode, after ``warmup`` calls."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)
