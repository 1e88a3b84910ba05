"""The report renderer on a small synthetic report: files, strict JSON, a self-contained HTML page, and
the same formatted numbers in the Markdown and HTML tables."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from recsys_mtl.report import format_value, write_report
from recsys_mtl.report.render import json_safe

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = "data:image/png;base64,"


def _classification_curve(task: str, rng: np.random.Generator, oracle: bool) -> dict:
    fpr = np.linspace(0, 1, 21)
    curve = {
        "task": task,
        "roc": {"fpr": fpr.tolist(), "tpr": np.sqrt(fpr).tolist()},
        "pr": {"recall": fpr.tolist(), "precision": (0.3 - 0.25 * fpr).tolist()},
        "calibration": {
            "predicted": [0.005, 0.01, 0.02, 0.05, 0.1, 0.3],
            "observed": [0.004, 0.012, None, 0.06, 0.09, 0.35],  # an empty bin
            "count": [5000, 3000, 0, 800, 150, 20],
        },
        "histogram": {
            "edges": np.linspace(0, 1, 11).tolist(),
            "positive": rng.integers(0, 50, 10).tolist(),
            "negative": rng.integers(100, 5000, 10).tolist(),
        },
    }
    if oracle:
        curve["oracle_roc"] = {"fpr": fpr.tolist(), "tpr": (fpr**0.3).tolist()}
    return curve


def _report() -> dict:
    rng = np.random.default_rng(0)
    return {
        "run": "/runs/demo-run",
        "data": "/data/test",
        "created": "2026-11-24T12:00:00Z",
        "rows": 100_000,
        "world_size": 2,
        "tasks": {
            "ctr": {
                "kind": "ctr",
                "metrics": {
                    "auc": 0.74,
                    "gauc": 0.61,
                    "gauc_groups": 1200,
                    "gauc_skipped_groups": 300,
                    "logloss": 0.1712345,
                    "ne": None,
                    "calibration": float("nan"),
                    "pr_auc": 0.12,
                    "oracle_auc": 0.86,
                    "oracle_logloss": 0.15,
                    "oracle_ne": 0.8,
                },
            },
            "ctcvr": {
                "kind": "ctcvr",
                "metrics": {
                    "auc": 0.718,
                    "cvr_auc_clicked": 0.66,
                    "cvr_auc_entire_space": 0.673,
                    "oracle_auc": 0.9636,
                    "oracle_cvr_auc_entire_space": 0.9325,
                },
            },
            "cvr": {"kind": "cvr", "metrics": {"auc": 0.6, "rows": 4012}},  # no oracle columns
            "watch_time": {
                "kind": "watch_time",
                "metrics": {
                    "rmse": 31.25,
                    "mae": 12.5,
                    "xauc": 0.7159,
                    "xauc_ci_low": 0.71,
                    "xauc_ci_high": 0.72,
                    "xauc_pairs": 1_000_000,
                    "oracle_xauc": 0.8488,
                    "oracle_rmse": 28.0,
                },
            },
        },
        "curves": {
            "ctr": _classification_curve("ctr", rng, oracle=True),
            "cvr_clicked": _classification_curve("ctcvr", rng, oracle=False),
            "watch_time": {
                "task": "watch_time",
                "histogram": {
                    "edges": [0, 10, 30, 60, 120, 300],
                    "predicted": [90_000, 4000, 3000, 2000, 1000],
                    "target": [95_000, 2000, 1500, 1000, 500],
                },
                "calibration": {
                    "predicted": [1, 5, 20, 60],
                    "observed": [0.5, 6, 18, 70],
                    "count": [9e4, 5e3, 3e3, 2e3],
                },
            },
        },
        "data_quality": {
            "rows_read": 100_000,
            "rows_dropped": 0,
            "dropped_by_reason": {},
            "null_ids": {"user_id": 3},
            "out_of_range_ids": {},
            "filled_dense": {"age": 12},
            "empty_files": [],
        },
        "unknown_section": {"ignored": True},
    }


def _train_log() -> list[dict]:
    log: list[dict] = [{"event": "start", "world_size": 2}]
    for step in range(0, 200, 10):
        log.append(
            {
                "event": "train",
                "step": step,
                "loss": {"ctr": 0.3 / (1 + step / 50), "ctcvr": 0.05, "watch_time": 900 / (1 + step)},
                "task_weights": {"ctr": 1.0, "ctcvr": 1.0 + step / 200, "watch_time": 0.01},
                "samples_per_s": 30_000.0,
            }
        )
        if step % 50 == 0:
            log.append(
                {
                    "event": "eval",
                    "step": step,
                    "metrics": {
                        "ctr": {"auc": 0.6 + step / 1000, "oracle_auc": 0.86, "gauc_groups": 10},
                        "watch_time": {"xauc": 0.65 + step / 2000, "rmse": float("nan")},
                    },
                }
            )
    return log


PLAN = [
    {"table": "user_id", "sharding": "table_wise", "kernel": "fused", "ranks": [0]},
    {"table": "item_id", "sharding": "row_wise", "kernel": "fused", "ranks": [0, 1]},
]
CONFIG_YAML = "model:\n  arch: mmoe  # <experts>\n  experts: 4\ntasks: [ctr, ctcvr]\n"


class _Tables(HTMLParser):
    """Rows (lists of cell texts) of every HTML table, keyed by the nearest heading above it."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.srcs: list[str] = []
        self._heading: str | None = None
        self._in: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.srcs += [v or "" for k, v in attrs if k == "src"]
        if tag in ("h1", "h2", "h3", "td", "th"):
            self._in, self._text = tag, ""
        elif tag == "table":
            self.tables[self._heading or ""] = []
        elif tag == "tr":
            self.tables[self._heading or ""].append([])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2", "h3"):
            self._heading = self._text
        elif tag in ("td", "th"):
            self.tables[self._heading or ""][-1].append(self._text)
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text += data


def _markdown_tables(markdown: str) -> dict[str, list[list[str]]]:
    tables: dict[str, list[list[str]]] = {}
    heading = ""
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r"-+:?", c) for c in cells):
                tables.setdefault(heading, []).append(cells)
    return tables


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report")
    return out, write_report(out, _report(), _train_log(), CONFIG_YAML, PLAN)


def test_files_and_pngs(written: tuple[Path, dict]) -> None:
    out, paths = written
    for key in ("json", "markdown", "html"):
        assert paths[key].is_file() and paths[key].parent == out
    names = {p.stem for p in paths["plots"]}
    assert names == {
        *(f"{c}_{p}" for c in ("ctr", "cvr_clicked") for p in ("roc", "pr", "calibration", "histogram")),
        "watch_time_histogram",
        "watch_time_calibration",
        "train_loss",
        "train_task_weights",
        "eval_metrics",
    }
    for path in paths["plots"]:
        assert path.parent == out / "plots"
        assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_metrics_json_is_the_report(written: tuple[Path, dict]) -> None:
    _, paths = written
    text = paths["json"].read_text()
    assert "NaN" not in text
    loaded = json.loads(text)
    assert loaded == json_safe(_report())
    assert loaded["tasks"]["ctr"]["metrics"]["calibration"] is None


def test_html_is_self_contained(written: tuple[Path, dict]) -> None:
    _, paths = written
    page = paths["html"].read_text()
    parser = _Tables()
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


def test_metric_tables_match_json_in_both_formats(written: tuple[Path, dict]) -> None:
    _, paths = written
    parser = _Tables()
    parser.feed(paths["html"].read_text())
    markdown_tables = _markdown_tables(paths["markdown"].read_text())
    for task, spec in json.loads(paths["json"].read_text())["tasks"].items():
        heading = f"{task} ({spec['kind']})"
        html_rows, md_rows = parser.tables[heading], markdown_tables[heading]
        assert html_rows == md_rows
        rows = {row[0]: row for row in md_rows[1:]}
        for key, value in spec["metrics"].items():
            if key.startswith("oracle_"):
                assert rows[key.removeprefix("oracle_")][2] == format_value(value)
            else:
                assert rows[key][1] == format_value(value)


def test_oracle_gap_is_model_minus_oracle(written: tuple[Path, dict]) -> None:
    _, paths = written
    tables = _markdown_tables(paths["markdown"].read_text())
    ctr = {row[0]: row for row in tables["ctr (ctr)"]}
    assert ctr["metric"] == ["metric", "model", "oracle", "gap (model − oracle)"]
    assert ctr["auc"][3] == format_value(0.74 - 0.86) == "-0.1200"
    assert ctr["logloss"][3] == format_value(0.1712345 - 0.15)
    assert ctr["ne"][1:] == ["–", "0.8000", "–"]  # no model value, no gap
    assert ctr["gauc_groups"][1:] == ["1,200", "–", "–"]  # a count: no oracle, no gap
    watch = {row[0]: row for row in tables["watch_time (watch_time)"]}
    assert watch["rmse"][3] == format_value(31.25 - 28.0) == "3.2500"
    assert tables["cvr (cvr)"][0] == ["metric", "model"]


def test_other_sections(written: tuple[Path, dict]) -> None:
    _, paths = written
    tables = _markdown_tables(paths["markdown"].read_text())
    assert ["null_ids", "user_id", "3"] in tables["Data quality"]
    assert ["rows_read", "", "100,000"] in tables["Data quality"]
    assert tables["Sharding plan"] == [
        ["table", "sharding", "kernel", "ranks"],
        ["user_id", "table_wise", "fused", "0"],
        ["item_id", "row_wise", "fused", "0, 1"],
    ]
    assert ["rows", "100,000"] in tables["Evaluation report: demo-run"]


def test_optional_sections_are_skipped(tmp_path: Path) -> None:
    report = {"tasks": {"ctr": {"kind": "ctr", "metrics": {"auc": 0.7}}}}
    paths = write_report(tmp_path, report, [], "", None)
    markdown = paths["markdown"].read_text()
    assert paths["plots"] == []
    for section in (
        "Training curves",
        "Sharding plan",
        "Resolved config",
        "Evaluation curves",
        "Data quality",
    ):
        assert section not in markdown
    assert "| auc | 0.7000 |" in markdown


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
