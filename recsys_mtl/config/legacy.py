"""The first release's task declaration (``labels:`` roles and task ``kind``s) is refused with the
equivalent ``tasks:`` list of SPEC §2.1 written out, so moving a config over is a copy and paste."""

from __future__ import annotations

from typing import Any

import yaml

_WATCH_LOSS = {
    "weighted_logistic": {"type": "weighted_logistic"},
    "log1p_mse": {"type": "regression", "transform": "log1p"},
    "mse": {"type": "regression"},
}


def _translate(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The new task list equivalent to an old ``labels`` + ``tasks`` pair (best effort)."""
    labels = {"click": "click", **(raw.get("labels") or {})}
    old_tasks = raw.get("tasks")
    if not old_tasks:  # the first release's default tasks: those the label roles allow
        old_tasks = [{"kind": "ctr"}] if labels.get("click") else []
        old_tasks += [{"kind": "ctcvr"}] if labels.get("conversion") else []
        old_tasks += [{"kind": "watch_time", **({} if labels.get("click") else {"loss": "log1p_mse"})}] if labels.get("watch_time") else []
    click, conversion, watch = (labels.get(role) or role for role in ("click", "conversion", "watch_time"))
    out: list[dict[str, Any]] = []
    for old in old_tasks:
        if not isinstance(old, dict):
            continue
        kind, weight = old.get("kind"), old.get("weight")
        new: dict[str, Any]
        if kind == "ctr":
            new = {"name": "click", "label": click}
        elif kind == "ctcvr":
            new = {"name": "conversion", "label": conversion, "after": "click"}
        elif kind == "cvr":
            new = {"name": "cvr", "label": conversion, "where": "click"}
        elif kind == "watch_time":
            new = {"name": "watch_time", "label": watch, **_WATCH_LOSS.get(old.get("loss") or "weighted_logistic", {})}
        else:
            continue
        if new.get("label") == new["name"]:
            del new["label"]
        if weight is not None and weight != 1.0:
            new["weight"] = weight
        out.append(new)
    return out


def legacy_tasks_message(raw: Any) -> str | None:
    """A message showing the new form when ``raw`` declares tasks the old way; None otherwise."""
    if not isinstance(raw, dict):
        return None
    tasks = raw.get("tasks")
    old_kind = isinstance(tasks, list | tuple) and any(isinstance(t, dict) and ("kind" in t or "loss" in t) for t in tasks)
    if "labels" not in raw and not old_kind:
        return None
    suggestion = yaml.safe_dump({"tasks": _translate(raw)}, sort_keys=False, default_flow_style=None).rstrip()
    return (
        "labels: roles and task kind/loss are the first release's form; tasks are now one list (SPEC §2.1, "
        "docs/tasks.md). Remove `labels:` and declare, for example:\n" + suggestion
    )
