from __future__ import annotations

import logging

from recsys_mtl.progress import Progress


def test_progress_logs_the_rate_when_enabled_and_stays_silent_otherwise(caplog):
    caplog.set_level(logging.INFO, logger="recsys_mtl.progress")
    with Progress(100, "read", log_every_s=0.0) as shown:
        shown.update(40)
    assert shown.count == 40
    assert any("read: 40/100 (40%) rows" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with Progress(100, "quiet", log_every_s=0.0, enabled=False) as silent:
        silent.update(40)
    assert silent.count == 40 and caplog.records == []
