"""A synthetic evaluation report of any task list (a click -> cart -> purchase funnel, an independent
binary task, a regression task), its training log, and parsers of the rendered tables and sections."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = "data:image/png;base64,"
BINARY_PLOTS = ("roc", "pr", "calibration", "histogram")
REGRESSION_PLOTS = ("histogram", "calibration")


def binary_curve(task: str, rng: np.random.Generator, oracle: bool) -> dict:
    fpr = np.linspace(0, 1, 21)
    curve = {
        "task": task,
        "kind": "binary",
        "roc": {"fpr": fpr.tolist(), "tpr": np.sqrt(fpr).tolist()},
        "pr": {"recall": fpr.tolist(), "precision": (0.3 - 0.25 * fpr).tolist()},
        "calibration": {
            "predicted": [0.005, 0.01, 0.02, 0.05, 0.1, 0.3],
            "observed": [0.004, 0.012, None, 0.06, 0.09, 0.35],  # an empty bin
            "count": [5000, 3000, 0, 800, 150, 20],
        },
        "histogram": {
            "edges": np.linspace(0, 1, 11).tolist(),
            "positive": rng.integers(1, 50, 10).tolist(),
            "negative": rng.integers(100, 5000, 10).tolist(),
        },
    }
    if oracle:
        curve["oracle_roc"] = {"fpr": fpr.tolist(), "tpr": (fpr**0.3).tolist()}
    return curve


def regression_curve(task: str) -> dict:
    return {
        "task": task,
        "kind": "regression",
        "histogram": {
            "edges": [0, 10, 30, 60, 120, 300],
            "predicted": [90_000, 4000, 3000, 2000, 1000],
            "target": [95_000, 2000, 1500, 1000, 500],
        },
        "calibration": {"predicted": [1, 5, 20, 60], "observed": [0.5, 6, 18, 70], "count": [9e4, 5e3, 3e3, 2e3]},
    }


def binary_metrics(prefix: str = "", oracle: bool = True, shift: float = 0.0) -> dict:
    m = {
        f"{prefix}auc": 0.74 + shift,
        f"{prefix}logloss": 0.1712345,
        f"{prefix}ne": 0.9,
        f"{prefix}calibration": 1.02,
        f"{prefix}pr_auc": 0.12,
    }
    if oracle:
        m |= {f"oracle_{prefix}auc": 0.86 + shift, f"oracle_{prefix}logloss": 0.15}
    return m


TASKS = {
    "click": {"type": "binary", "label": "click"},
    "cart": {"type": "binary", "label": "cart", "after": "click"},
    "purchase": {"type": "binary", "label": "buy_flag", "after": "cart"},
    "share": {"type": "binary", "label": "share"},
    "dwell": {"type": "regression", "label": "dwell_ms"},
}
CURVES = {  # curve (output) -> (task, kind)
    "click": ("click", "binary"),
    "cart": ("cart", "binary"),
    "cart_given_click": ("cart", "binary"),
    "purchase": ("purchase", "binary"),
    "purchase_given_cart": ("purchase", "binary"),
    "share": ("share", "binary"),
    "dwell": ("dwell", "regression"),
}
DROPPED = {"cart_without_click": 3, "dwell_negative": 1, "purchase_without_cart": 2, "share_missing": 4}


def sample_report() -> dict:
    rng = np.random.default_rng(0)
    click = binary_metrics() | {"gauc": 0.61, "gauc_groups": 1200, "gauc_skipped_groups": 300, "oracle_gauc": 0.7}
    click["calibration"] = float("nan")
    click["ne"] = None
    click["oracle_ne"] = 0.8

    def stage(shift: float) -> dict:
        return (
            binary_metrics(shift=shift)
            | binary_metrics("conditional_", shift=shift - 0.05)
            | {"conditional_auc_counterfactual": 0.81, "oracle_conditional_auc_counterfactual": 1.0}
        )

    metrics = {
        "click": click,
        "cart": stage(0.01),
        "purchase": stage(0.02),
        "share": binary_metrics(oracle=False) | {"gauc": 0.55, "rows": 4012},  # no oracle columns
        "dwell": {
            "rmse": 31.25,
            "mae": 12.5,
            "xauc": 0.7159,
            "xauc_ci_low": 0.71,
            "xauc_ci_high": 0.72,
            "xauc_pairs": 1_000_000,
            "oracle_xauc": 0.8488,
            "oracle_rmse": 28.0,
        },
    }
    curves = {
        name: binary_curve(task, rng, oracle=task != "share") if kind == "binary" else regression_curve(task)
        for name, (task, kind) in CURVES.items()
    }
    return {
        "run": "/runs/demo-run",
        "data": "/data/test",
        "created": "2026-11-24T12:00:00Z",
        "rows": 100_000,
        "world_size": 2,
        "tasks": {name: {**entry, "metrics": metrics[name]} for name, entry in TASKS.items()},
        "curves": curves,
        "data_quality": {
            "rows_read": 100_000,
            "rows_dropped": 10,
            "dropped_by_reason": DROPPED,
            "null_ids": {"user_id": 3},
            "out_of_range_ids": {},
            "filled_dense": {"age": 12},
            "empty_files": [],
        },
        "unknown_section": {"ignored": True},
    }


def sample_train_log() -> list[dict]:
    log: list[dict] = [{"event": "start", "world_size": 2}]
    for step in range(0, 200, 10):
        log.append(
            {
                "event": "train",
                "step": step,
                "loss": {"click": 0.3 / (1 + step / 50), "purchase": 0.05, "dwell": 900 / (1 + step)},
                "task_weights": {"click": 1.0, "purchase": 1.0 + step / 200, "dwell": 0.01},
                "samples_per_s": 30_000.0,
            }
        )
        if step % 50 == 0:
            log.append(
                {
                    "event": "eval",
                    "step": step,
                    "metrics": {
                        "click": {"auc": 0.6 + step / 1000, "logloss": 0.2, "oracle_auc": 0.86, "gauc_groups": 10},
                        "dwell": {"xauc": 0.65 + step / 2000, "rmse": float("nan")},
                    },
                }
            )
    return log


PLAN = [
    {"table": "user_id", "sharding": "table_wise", "kernel": "fused", "ranks": [0]},
    {"table": "item_id", "sharding": "row_wise", "kernel": "fused", "ranks": [0, 1]},
]
CONFIG_YAML = "model:\n  arch: mmoe  # <experts>\n  experts: 4\ntasks: [{name: click}]\n"


class Tables(HTMLParser):
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
        if tag in ("h1", "h2", "h3", "h4", "td", "th"):
            self._in, self._text = tag, ""
        elif tag == "table":
            self.tables[self._heading or ""] = []
        elif tag == "tr":
            self.tables[self._heading or ""].append([])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2", "h3", "h4"):
            self._heading = self._text
        elif tag in ("td", "th"):
            self.tables[self._heading or ""][-1].append(self._text)
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text += data


def markdown_tables(markdown: str) -> dict[str, list[list[str]]]:
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


def markdown_sections(markdown: str, level: int) -> dict[str, str]:
    """The Markdown text under each heading of ``level``, up to the next heading of that level or above."""
    out: dict[str, str] = {}
    current = None
    for line in markdown.splitlines():
        depth = len(line) - len(line.lstrip("#")) if line.startswith("#") else 0
        if depth and depth <= level:
            current = line[depth:].strip() if depth == level else None
            if current is not None:
                out[current] = ""
        elif current is not None:
            out[current] += line + "\n"
    return out
