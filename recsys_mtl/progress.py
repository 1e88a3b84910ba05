"""Progress for long steps: a tqdm bar on a terminal, periodic log lines otherwise (CI, pods, files)."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("recsys_mtl.progress")


class Progress:
    """Counts ``unit`` s (e.g. rows) towards ``total``; shows the rate (unit/s).

    ``enabled=False`` counts silently (the other ranks of a distributed job: one display is enough).
    """

    def __init__(
        self, total: int | None, desc: str, unit: str = "rows", log_every_s: float = 10.0, enabled: bool = True
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled = enabled
        self.count = 0
        self.start = self._last_log = time.perf_counter()
        self.log_every_s = log_every_s
        show_bar = enabled and sys.stderr.isatty()
        self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True) if show_bar else None

    def update(self, n: int) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if self.enabled and now - self._last_log >= self.log_every_s:
            self._last_log = now
            log.info("%s", self.line())

    def rate(self) -> float:
        """Units per second since the start."""
        return self.count / max(time.perf_counter() - self.start, 1e-9)

    def line(self) -> str:
        done = f"{self.count:,}" + (f"/{self.total:,} ({100 * self.count / self.total:.0f}%)" if self.total else "")
        return f"{self.desc}: {done} {self.unit}, {self.rate():,.0f} {self.unit}/s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            log.info("%s (done)", self.line())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
