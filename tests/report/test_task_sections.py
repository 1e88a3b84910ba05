"""The task sections of the report on the sample report (``sample.py``): one section per task with its
type and place in the task graph, its metric tables per space (model, oracle, gap), the headline
metrics by type, and plots chosen by each curve's kind; nothing decided by a task's name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from recsys_mtl.report import format_value, plots, write_report
from recsys_mtl.report.headline import headline_metrics, headline_text
from tests.report.sample import (
    BINARY_PLOTS,
    CURVES,
    PNG_SIGNATURE,
    REGRESSION_PLOTS,
    TASKS,
    Tables,
    binary_curve,
    markdown_sections,
    markdown_tables,
    regression_curve,
    sample_report,
)


def test_every_task_has_a_section_with_its_place_in_the_graph_and_its_plots(written: tuple[Path, dict]) -> None:
    _, paths = written
    markdown = paths["markdown"].read_text()
    sections = markdown_sections(markdown, 3)
    html_page = paths["html"].read_text()
    for task, entry in TASKS.items():
        heading = f"{task} ({entry['type']})"
        assert heading in sections, heading
        assert f"<h3>{heading}</h3>" in html_page
        section = sections[heading]
        assert f"Type: {entry['type']}. Label column: {entry['label']}." in section
        # every plot of every curve of the task, in the task's own section
        for curve, (owner, kind) in CURVES.items():
            for part in BINARY_PLOTS if kind == "binary" else REGRESSION_PLOTS:
                assert (f"(plots/{curve}_{part}.png)" in section) == (owner == task), (task, curve, part)
    assert "funnel stage click → cart → purchase" in sections["purchase (binary)"]
    assert "Outputs: purchase, purchase_given_cart." in sections["purchase (binary)"]
    assert "followed by purchase" in sections["cart (binary)"]
    assert "Place in the task graph: every row; followed by cart." in sections["click (binary)"]
    assert "Rows dropped for its labels: purchase_without_cart 2." in sections["purchase (binary)"]
    assert "Rows dropped for its labels: share_missing 4." in sections["share (binary)"]
    assert "Rows dropped" not in sections["click (binary)"]

    overview = {row[0]: row for row in markdown_tables(markdown)["Tasks"]}
    assert overview["task"] == ["task", "type", "label", "place in the task graph", "outputs", "rows dropped"]
    assert overview["purchase"] == [
        "purchase", "binary", "buy_flag", "funnel stage click → cart → purchase", "purchase, purchase_given_cart", "2",
    ]
    assert overview["dwell"][1:4] == ["regression", "dwell_ms", "every row"]
    assert overview["click"][5] == "0"


def test_metric_tables_per_space_match_json_in_both_formats(written: tuple[Path, dict]) -> None:
    _, paths = written
    parser = Tables()
    parser.feed(paths["html"].read_text())
    md_tables = markdown_tables(paths["markdown"].read_text())
    for task, spec in json.loads(paths["json"].read_text())["tasks"].items():
        tables = {h: rows for h, rows in md_tables.items() if h.startswith(f"{task}: ")}
        assert tables, task
        for heading, md_rows in tables.items():
            assert parser.tables[heading] == md_rows, heading
        where = {}  # metric -> the heading of the table that holds it
        for heading, md_rows in tables.items():
            for row in md_rows[1:]:
                assert row[0] not in where, (task, row[0])
                where[row[0]] = (heading, row)
        for key, value in spec["metrics"].items():
            name = key.removeprefix("oracle_")
            heading, row = where[name]
            assert row[2 if key.startswith("oracle_") else 1] == format_value(value), (task, key)
            if name.endswith("_counterfactual"):
                assert heading == f"{task}: counterfactual (every row)"
            elif name.startswith("conditional_"):
                assert heading == f"{task}: conditional space ({spec['after']} = 1)"
            else:
                assert heading == f"{task}: {'entire space' if spec.get('after') else 'every row'}"


def test_oracle_gap_is_model_minus_oracle(written: tuple[Path, dict]) -> None:
    _, paths = written
    tables = markdown_tables(paths["markdown"].read_text())
    click = {row[0]: row for row in tables["click: every row"]}
    assert click["metric"] == ["metric", "model", "oracle", "gap (model − oracle)"]
    assert click["auc"][3] == format_value(0.74 - 0.86) == "-0.1200"
    assert click["logloss"][3] == format_value(0.1712345 - 0.15)
    assert click["ne"][1:] == ["–", "0.8000", "–"]  # no model value, no gap
    assert click["gauc_groups"][1:] == ["1,200", "–", "–"]  # a count: no oracle, no gap
    conditional = {row[0]: row for row in tables["purchase: conditional space (cart = 1)"]}
    assert conditional["conditional_auc"][1:] == ["0.7100", "0.8300", format_value(0.71 - 0.83)]
    dwell = {row[0]: row for row in tables["dwell: every row"]}
    assert dwell["rmse"][3] == format_value(31.25 - 28.0) == "3.2500"
    assert tables["share: every row"][0] == ["metric", "model"]


def test_headline_table_follows_each_task_type_and_place(written: tuple[Path, dict]) -> None:
    _, paths = written
    rows = markdown_tables(paths["markdown"].read_text())["Headline metrics"]
    assert rows[0] == ["task", "metric", "model", "oracle", "gap (model − oracle)"]
    assert [tuple(r[:2]) for r in rows[1:]] == [
        ("click", "auc"), ("click", "gauc"), ("click", "calibration"),
        ("cart", "auc"), ("cart", "conditional_auc"),
        ("purchase", "auc"), ("purchase", "conditional_auc"),
        ("share", "auc"), ("share", "gauc"), ("share", "calibration"),
        ("dwell", "xauc"), ("dwell", "rmse"),
    ]  # fmt: skip
    assert rows[1][2:] == ["0.7400", "0.8600", "-0.1200"]
    text = headline_text(sample_report())
    assert text.splitlines()[0].split() == ["task", "metric", "model", "oracle"]
    assert re.search(r"purchase\s+conditional_auc\s+0\.7100\s+0\.8300", text)
    where = {"type": "binary", "where": "click", "metrics": {"auc": 0.7, "gauc": 0.6, "calibration": 1.0}}
    assert headline_metrics(where) == ["auc"]
    weighted = {"type": "weighted_logistic", "metrics": {"rmse": 1.0, "xauc": 0.6, "mae": 0.5}}
    assert headline_metrics(weighted) == ["xauc", "rmse"]


def test_plots_follow_each_curve_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    def recorder(name: str):
        def draw(title: str, *args: object) -> bytes:
            calls.append((name, title, *args))
            return PNG_SIGNATURE

        return draw

    for name in ("roc_png", "pr_png", "calibration_png", "score_histogram_png", "value_histogram_png"):
        monkeypatch.setattr(plots, name, recorder(name))
    report = sample_report()
    write_report(tmp_path, report, [], "", None)
    drawn = {(c[0], c[1].split(" ")[0]) for c in calls}
    for curve, (_, kind) in CURVES.items():
        if kind == "binary":
            assert {(f, curve) for f in ("roc_png", "pr_png", "calibration_png", "score_histogram_png")} <= drawn
        else:
            assert {(f, curve) for f in ("value_histogram_png", "calibration_png")} <= drawn
            assert ("roc_png", curve) not in drawn and ("score_histogram_png", curve) not in drawn
    for call in calls:
        curve = call[1].split(" ")[0]
        if call[0] == "roc_png":  # the oracle's ROC, dashed, whenever the curve has one
            assert call[3] == report["curves"][curve].get("oracle_roc")
        if call[0] == "calibration_png":
            regression = CURVES[curve][1] == "regression"
            assert call[3:] == (("mean predicted value", "mean target") if regression else ("mean predicted probability", "observed positive rate"))


def test_curve_kind_is_read_from_the_curve_when_missing(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    binary = binary_curve("a", rng, oracle=False)
    regression = regression_curve("b")
    del binary["kind"], regression["kind"]
    report = {
        "tasks": {"a": {"type": "binary", "metrics": {"auc": 0.7}}, "b": {"type": "regression", "metrics": {"rmse": 1.0}}},
        "curves": {"a": binary, "b": regression, "stray": regression_curve("gone")},
    }
    paths = write_report(tmp_path, report, [], "", None)
    assert {p.stem for p in paths["plots"]} == {
        *(f"a_{p}" for p in BINARY_PLOTS), *(f"b_{p}" for p in REGRESSION_PLOTS), *(f"stray_{p}" for p in REGRESSION_PLOTS),
    }  # fmt: skip
    assert "## Other curves" in paths["markdown"].read_text()  # a curve of no listed task still shows


def test_no_objective_is_named_in_the_report_code() -> None:
    """What the report shows follows from the task list (docs/tasks.md), never from a task's name."""
    import recsys_mtl.report as package

    folder = Path(package.__file__).parent
    for name in ("render.py", "plots.py", "task_sections.py", "headline.py", "document.py", "compare.py"):
        source = (folder / name).read_text().lower()
        for word in ("watch", "ctr", "cvr", "click", "conversion", "purchase"):
            assert not re.search(rf"\b\w*{word}\w*\b", source), (name, word)
