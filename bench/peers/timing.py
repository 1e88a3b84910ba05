"""Training throughput after warm-up, from the start times of a model's forward calls."""

from __future__ import annotations

import time

from torch import nn


class ForwardClock:
    """Records when each forward call of ``model`` starts; during training one call is one batch."""

    def __init__(self, model: nn.Module):
        self.starts: list[float] = []
        self._handle = model.register_forward_pre_hook(lambda module, args: self.starts.append(time.perf_counter()))

    def samples_per_s(self, batch_size: int, warmup: int = 50) -> float:
        """Batches after the first ``warmup`` ones, over the time from the warm-up's end to the last start."""
        self._handle.remove()
        if len(self.starts) < warmup + 2:
            raise ValueError(f"{len(self.starts)} batches, not enough past the {warmup} warm-up ones: use more --rows")
        starts = self.starts[warmup:]
        return (len(starts) - 1) * batch_size / (starts[-1] - starts[0])
