"""The report renderer on the sample report (``sample.py``): files, strict JSON, a self-contained HTML
page, the same formatted numbers in Markdown and HTML, data quality and the other sections."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from recsys_mtl.report import format_value, write_report
from recsys_mtl.report.render import json_safe
from tests.report.sample import (
    BINARY_PLOTS,
    CONFIG_YAML,
    CURVES,
    DATA_URI,
    DROPPED,
    PNG_SIGNATURE,
    REGRESSION_PLOTS,
    Tables,
    markdown_tables,
    sample_report,
)


def test_files_and_pngs(written: tuple[Path, dict]) -> None:
    out, paths = written
    for key in ("json", "markdown", "html"):
        assert paths[key].is_file() and paths[key].parent == out
    names = {p.stem for p in paths["plots"]}
    expected = {"train_loss", "train_task_weights", "eval_metrics"}
    for curve, (_, kind) in CURVES.items():
        expected |= {f"{curve}_{p}" for p in (BINARY_PLOTS if kind == "binary" else REGRESSION_PLOTS)}
    assert names == expected
    for path in paths["plots"]:
        assert path.parent == out / "plots"
        assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_metrics_json_is_the_report(written: tuple[Path, dict]) -> None:
    _, paths = written
    text = paths["json"].read_text()
    assert "NaN" not in text
    loaded = json.loads(text)
    assert loaded == json_safe(sample_report())
    assert loaded["tasks"]["click"]["metrics"]["calibration"] is None


def test_html_is_self_contained(written: tuple[Path, dict]) -> None:
    _, paths = written
    page = paths["html"].read_text()
    parser = Tables()
    parser.feed(page)
    assert len(parser.srcs) == len(paths["plots"])
    assert all(src.startswith(DATA_URI) for src in parser.srcs)
    assert re.findall(r'src="(?!data:image/png;base64,)', page) == []
    for forbidden in ('href="http', "<link", "<script", "url("):
        assert forbidden not in page
    assert "# &lt;experts&gt;" in page  # config text escaped


def test_markdown_links_plots_and_holds_config(written: tuple[Path, dict]) -> None:
    out, paths = written
    markdown = paths["markdown"].read_text()
    for path in paths["plots"]:
        assert f"]({path.relative_to(out).as_posix()})" in markdown
    assert f"```yaml\n{CONFIG_YAML.rstrip()}\n```" in markdown


def test_data_quality_shows_the_drop_reasons_as_they_come(written: tuple[Path, dict]) -> None:
    _, paths = written
    tables = markdown_tables(paths["markdown"].read_text())
    quality = tables["Data quality"]
    for reason, count in DROPPED.items():
        assert ["dropped_by_reason", reason, format_value(count)] in quality
    assert ["null_ids", "user_id", "3"] in quality
    assert ["rows_read", "", "100,000"] in quality


def test_other_sections(written: tuple[Path, dict]) -> None:
    _, paths = written
    tables = markdown_tables(paths["markdown"].read_text())
    assert tables["Sharding plan"] == [
        ["table", "sharding", "kernel", "ranks"],
        ["user_id", "table_wise", "fused", "0"],
        ["item_id", "row_wise", "fused", "0, 1"],
    ]
    assert ["rows", "100,000"] in tables["Evaluation report: demo-run"]
    assert "eval metrics during training (headline metrics)" in paths["markdown"].read_text()


def test_optional_sections_are_skipped(tmp_path: Path) -> None:
    report = {"tasks": {"a": {"type": "binary", "label": "a", "metrics": {"auc": 0.7}}}}
    paths = write_report(tmp_path, report, [], "", None)
    markdown = paths["markdown"].read_text()
    assert paths["plots"] == []
    for section in ("Training curves", "Sharding plan", "Resolved config", "Other curves", "Data quality", "plots"):
        assert section not in markdown
    assert "| auc | 0.7000 |" in markdown
    assert "### a (binary)" in markdown


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "–"),
        (float("nan"), "–"),
        (1234567, "1,234,567"),
        (0.123456, "0.1235"),
        (-0.12, "-0.1200"),
        (12345.5, "12,345.5000"),
        (0.0, "0.0000"),
        (3e-6, "3.000e-06"),
        (True, "true"),
        ("fused", "fused"),
    ],
)


def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


def test_json_safe_converts_nan_and_numpy() -> None:
    value = {"a": [np.float32(0.5), float("inf")], "b": np.int64(3), "c": (1, math.nan)}
    assert json_safe(value) == {"a": [0.5, None], "b": 3, "c": [1, None]}
