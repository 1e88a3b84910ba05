"""The task sections of the report (docs/tasks.md): an overview of the task graph, the headline
metrics, and for every task its type, its place in the graph, the rows dropped for its labels, its
metric tables (model, oracle, gap) per space, and its plots.

Everything here follows from the report's task entries (``type``, ``label``, ``after``, ``where``,
``metrics``) and metric names (``conditional_*``, ``*_counterfactual``, ``oracle_*``), never from a
task's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from recsys_mtl.report.document import Block, Heading, Paragraph, Plot, Table, format_value
from recsys_mtl.report.headline import headline_rows, task_type

ORACLE = "oracle_"
CONDITIONAL = "conditional_"
COUNTERFACTUAL = "_counterfactual"
METRIC_ORDER = ("auc", "gauc", "logloss", "ne", "calibration", "pr_auc", "xauc", "rmse", "mae")

Tasks = Mapping[str, Mapping[str, Any]]


# --- the task graph -----------------------------------------------------------------------------------


def funnel_chain(tasks: Tasks, name: str) -> list[str]:
    """``[root, ..., parent, name]`` along the ``after`` links (just ``[name]`` for a task without one)."""
    out = [name]
    while (after := (tasks.get(out[-1]) or {}).get("after")) and after not in out:
        out.append(after)
    return out[::-1]


def place_in_graph(tasks: Tasks, name: str) -> str:
    """The task's place in the task graph, in words: funnel chain, sample space, what depends on it."""
    entry = tasks[name]
    parts = []
    if entry.get("after"):
        parts.append("funnel stage " + " → ".join(funnel_chain(tasks, name)))
    if entry.get("where"):
        parts.append(f"on rows where {entry['where']} = 1")
    if not parts:
        parts.append("every row")
    if followers := [t for t, e in tasks.items() if e.get("after") == name]:
        parts.append("followed by " + ", ".join(followers))
    if spaces := [t for t, e in tasks.items() if e.get("where") == name]:
        parts.append("sample space of " + ", ".join(spaces))
    return "; ".join(parts)


def outputs(name: str, entry: Mapping[str, Any]) -> list[str]:
    """The task's outputs: ``<name>``, and ``<name>_given_<after>`` for a funnel stage."""
    return [name, f"{name}_given_{entry['after']}"] if entry.get("after") else [name]


def dropped_by_task(tasks: Tasks, quality: Mapping[str, Any] | None) -> dict[str, dict[str, int]]:
    """The data-quality drop reasons (``<task>_missing``, ``<task>_without_<after>``, ...) of each task:
    a reason belongs to the longest task name it starts with (followed by ``_``)."""
    out: dict[str, dict[str, int]] = {name: {} for name in tasks}
    names = sorted(tasks, key=len, reverse=True)
    for reason, count in ((quality or {}).get("dropped_by_reason") or {}).items():
        owner = next((t for t in names if reason.startswith(t + "_")), None)
        if owner is not None:
            out[owner][reason] = count
    return out


# --- metric tables ------------------------------------------------------------------------------------


def _gap(model: object, oracle: object) -> float | None:
    """model − oracle for real-valued metrics; counts (ints) and missing values have no gap."""
    if isinstance(model, float) and isinstance(oracle, float):
        return model - oracle
    return None


def _rank(metric: str) -> tuple[int, bool]:
    """The place of a metric's family in ``METRIC_ORDER``, the metric before its companions
    (``gauc`` then ``gauc_groups``)."""
    base = metric.removeprefix(CONDITIONAL).removesuffix(COUNTERFACTUAL)
    ranks = [i for i, m in enumerate(METRIC_ORDER) if base == m or base.startswith(m + "_")]
    rank = max(ranks, key=lambda i: len(METRIC_ORDER[i]), default=len(METRIC_ORDER))
    return rank, rank < len(METRIC_ORDER) and base != METRIC_ORDER[rank]


def metric_table(metrics: Mapping[str, object]) -> Table:
    """One row per metric (the usual ones first, in ``METRIC_ORDER``, then the others as they come);
    with oracle and gap (model − oracle) columns when any ``oracle_*`` key exists."""
    oracle = {k[len(ORACLE) :]: v for k, v in metrics.items() if k.startswith(ORACLE)}
    names = [k for k in metrics if not k.startswith(ORACLE)]
    names += [m for m in oracle if m not in metrics]  # an oracle value without a model value still shows
    names.sort(key=_rank)  # stable: metrics of one family keep their order
    if not oracle:
        return Table(("metric", "model"), [(m, format_value(metrics[m])) for m in names], (False, True))
    rows = [
        (m, format_value(metrics.get(m)), format_value(oracle.get(m)), format_value(_gap(metrics.get(m), oracle.get(m))))
        for m in names
    ]
    return Table(("metric", "model", "oracle", "gap (model − oracle)"), rows, (False, True, True, True))


def _space(metric: str) -> str:
    base = metric.removeprefix(ORACLE)
    if base.endswith(COUNTERFACTUAL):
        return "counterfactual"
    return "conditional" if base.startswith(CONDITIONAL) else "task"


def metric_spaces(name: str, entry: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(title, which rows and output, metrics)`` for each space the task's metrics are taken on
    that has metrics: the task's own space, the conditional space (``conditional_*``), and the
    counterfactual (``*_counterfactual``)."""
    after, where = entry.get("after"), entry.get("where")
    by_space: dict[str, dict[str, Any]] = {"task": {}, "conditional": {}, "counterfactual": {}}
    for key, value in (entry.get("metrics") or {}).items():
        by_space[_space(key)][key] = value
    if after:
        own = ("entire space", f"{name} (the product along its funnel chain) on every row")
    elif where:
        own = (f"sample space ({where} = 1)", f"{name} on the rows where {where} is 1")
    else:
        own = ("every row", f"{name} on every row")
    conditional = (
        (f"conditional space ({after} = 1)", f"{name}_given_{after} on the rows where {after} is 1")
        if after
        else ("conditional space", "the conditional output on its parent's positive rows")
    )
    served = f"{name}_given_{after}" if after else name
    counterfactual = (
        "counterfactual (every row)",
        f"{served} against the true conditional probability (oracle column) on every row: ranking only",
    )
    titles = {"task": own, "conditional": conditional, "counterfactual": counterfactual}
    return [(*titles[space], metrics) for space, metrics in by_space.items() if metrics]


# --- sections -----------------------------------------------------------------------------------------


def overview(tasks: Tasks, quality: Mapping[str, Any] | None) -> list[Block]:
    """The task list: type, label column, place in the graph, outputs, rows dropped for its labels."""
    if not tasks:
        return []
    dropped = dropped_by_task(tasks, quality)
    rows = [
        (
            name,
            task_type(entry),
            str(entry.get("label", name)),
            place_in_graph(tasks, name),
            ", ".join(outputs(name, entry)),
            format_value(sum(dropped[name].values())),
        )
        for name, entry in tasks.items()
    ]
    header = ("task", "type", "label", "place in the task graph", "outputs", "rows dropped")
    return [Heading(2, "Tasks"), Table(header, rows, (False,) * 5 + (True,))]


def headline(report: Mapping[str, Any]) -> list[Block]:
    """The headline metrics of every task (``headline.py``), with the oracle's when there is one."""
    rows = headline_rows(report)
    if not rows:
        return []
    if not any(oracle is not None for *_, oracle in rows):
        table = Table(("task", "metric", "model"), [(t, m, format_value(v)) for t, m, v, _ in rows], (False, False, True))
    else:
        table = Table(
            ("task", "metric", "model", "oracle", "gap (model − oracle)"),
            [(t, m, format_value(v), format_value(o), format_value(_gap(v, o))) for t, m, v, o in rows],
            (False, False, True, True, True),
        )
    return [Heading(2, "Headline metrics"), table]


def describe(tasks: Tasks, name: str, dropped: Mapping[str, int]) -> str:
    entry = tasks[name]
    text = f"Type: {task_type(entry)}. Label column: {entry.get('label', name)}."
    text += f" Place in the task graph: {place_in_graph(tasks, name)}. Outputs: " + ", ".join(outputs(name, entry)) + "."
    if dropped:
        text += " Rows dropped for its labels: " + ", ".join(f"{r} {format_value(n)}" for r, n in dropped.items()) + "."
    return text


def task_section(tasks: Tasks, name: str, dropped: Mapping[str, int], plots: Sequence[Plot]) -> list[Block]:
    """One task: what it is, its metric tables per space, its plots."""
    blocks: list[Block] = [Heading(3, f"{name} ({task_type(tasks[name])})"), Paragraph(describe(tasks, name, dropped))]
    for title, rows, metrics in metric_spaces(name, tasks[name]):
        blocks += [Heading(4, f"{name}: {title}"), Paragraph(f"Rows and output: {rows}."), metric_table(metrics)]
    if plots:
        blocks += [Heading(4, f"{name}: plots"), *(p.image() for p in plots)]
    return blocks


def task_sections(tasks: Tasks, quality: Mapping[str, Any] | None, plots: Mapping[str, Sequence[Plot]]) -> list[Block]:
    """``plots``: each task's plots by task name."""
    if not tasks:
        return []
    dropped = dropped_by_task(tasks, quality)
    blocks: list[Block] = [Heading(2, "Metrics per task")]
    for name in tasks:
        blocks += task_section(tasks, name, dropped[name], plots.get(name, ()))
    return blocks
