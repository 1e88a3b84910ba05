from __future__ import annotations

from pathlib import Path

import pytest

from recsys_mtl.report import write_report
from tests.report.sample import CONFIG_YAML, PLAN, sample_report, sample_train_log


@pytest.fixture(scope="session")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The sample report written once: its directory and ``write_report``'s paths."""
    out = tmp_path_factory.mktemp("report")
    return out, write_report(out, sample_report(), sample_train_log(), CONFIG_YAML, PLAN)
