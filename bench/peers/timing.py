"""Throughput after warm-up from the start times of a model's forward calls, and forward latency."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


class ForwardClock:
    """Records when each forward call of ``model`` starts; during training one call is one batch."""

    def __init__(self, model: nn.Module):
        self.starts: list[float] = []
        self._handle = model.register_forward_pre_hook(lambda module, args: self.starts.append(time.perf_counter()))

    def samples_per_s(self, batch_size: int, warmup: int = 50) -> float:
        """Batches after the first ``warmup`` ones, over the time from the warm-up's end to the last start."""
        self._handle.remove()
        starts = self.starts[warmup:]
        return (len(starts) - 1) * batch_size / (starts[-1] - starts[0])


def latency_ms(fn: Callable[[], object], repeats: int = 200) -> tuple[float, float]:
    """p50, p99 of ``fn()`` in ms, under inference mode, after 20 warm-up calls."""
    with torch.inference_mode():
        for _ in range(20):
            fn()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)
