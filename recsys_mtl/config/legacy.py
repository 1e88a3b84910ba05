"""The first release's task declaration (``labels:`` roles and task ``kind``s) is refused with the new
``tasks:`` form written out for the config at hand: one task per label column (or per old task), and
how to mark each task's place in the graph. Built from the config's own values, so nothing here names
an objective."""

from __future__ import annotations

from typing import Any

import yaml

_HOW = (
    "then give each task its place: `after: <task>` for a funnel stage trained over every row (the old "
    "ESMM kind), `where: <task>` for a model of that task's positive rows only (the old click-only kind), "
    "`type: weighted_logistic` or `type: regression` (with `transform: log1p`) for a non-binary label (the "
    "old duration losses), and `label: <column>` when the column is not named like the task"
)


def _entries(raw: dict[str, Any]) -> list[dict[str, str]]:
    """One plain task per label column of the old ``labels:`` (in order), else per old task name."""
    labels = raw.get("labels")
    columns = [c for c in labels.values() if isinstance(c, str)] if isinstance(labels, dict) else []
    if columns:
        return [{"name": c} for c in dict.fromkeys(columns)]
    tasks = raw.get("tasks") if isinstance(raw.get("tasks"), list | tuple) else []
    return [{"name": t["name"]} for t in tasks if isinstance(t, dict) and isinstance(t.get("name"), str)]


def legacy_tasks_message(raw: Any) -> str | None:
    """A message showing the new form when ``raw`` declares tasks the old way; None otherwise."""
    if not isinstance(raw, dict):
        return None
    tasks = raw.get("tasks")
    old_kind = isinstance(tasks, list | tuple) and any(isinstance(t, dict) and ("kind" in t or "loss" in t) for t in tasks)
    if "labels" not in raw and not old_kind:
        return None
    example = yaml.safe_dump({"tasks": _entries(raw) or [{"name": "<label column>"}]}, sort_keys=False, default_flow_style=None)
    return (
        "labels: roles and task kind/loss are the first release's form; declare one task per objective in a "
        "`tasks:` list (SPEC §2.1, docs/tasks.md). Remove `labels:` and start from:\n" + example.rstrip() + "\n" + _HOW
    )
