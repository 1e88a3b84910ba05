"""The task graph (SPEC §2.1, docs/tasks.md): tasks, their funnel chains and sample spaces, and the
outputs they produce. Pure Python, no config or torch import: the config validates with it, and the
losses, predictions, metrics, scorer and server read the same ``TaskSpec`` list.

``after: T`` edges make funnel chains (root -> ... -> parent -> self); ``where: T`` edges make sample
spaces. Both point at binary tasks, and together they must not form a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

SCORE = "score"
"""The ranking score's output name (no task may take it)."""


@dataclass(frozen=True)
class TaskSpec:
    """One objective. ``type``: binary | regression | weighted_logistic; ``label``: its column."""

    name: str
    type: str = "binary"
    label: str = ""
    after: str | None = None
    where: str | None = None
    weight: float = 1.0
    transform: str = "none"  # regression: none | log1p
    scale: float = 1.0  # regression / weighted_logistic: label multiplier inside the loss
    weight_column: str | None = None

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def is_binary(self) -> bool:
        return self.type == "binary"

    @property
    def is_regression(self) -> bool:
        """A squared-error loss (Gaussian likelihood) rather than a logistic one."""
        return self.type == "regression"

    @property
    def conditional_output(self) -> str | None:
        """A funnel stage's second output, p(self | parent): ``<name>_given_<after>``."""
        return f"{self.name}_given_{self.after}" if self.after else None


def by_name(tasks: list[TaskSpec]) -> dict[str, TaskSpec]:
    return {t.name: t for t in tasks}


def chain(tasks: list[TaskSpec], name: str) -> list[TaskSpec]:
    """The funnel chain ending at ``name``, root first: ``[root, ..., parent, self]``."""
    index = by_name(tasks)
    out = [index[name]]
    while out[-1].after is not None:
        out.append(index[out[-1].after])
    return out[::-1]


def output_names(tasks: list[TaskSpec]) -> list[str]:
    """Every per-row output, in task order: ``<name>`` and, for funnel stages, ``<name>_given_<after>``."""
    out = []
    for t in tasks:
        out.append(t.name)
        if t.conditional_output:
            out.append(t.conditional_output)
    return out


def probability_outputs(tasks: list[TaskSpec]) -> set[str]:
    """The outputs that are probabilities (binary tasks'); the others are expected label values."""
    return {name for t in tasks if t.is_binary for name in (t.name, t.conditional_output) if name}


def topological(tasks: list[TaskSpec]) -> list[TaskSpec]:
    """Tasks ordered so that every ``after`` / ``where`` target comes before the tasks that name it."""
    index, done, out = by_name(tasks), set(), []

    def visit(t: TaskSpec) -> None:
        if t.name in done:
            return
        for parent in (t.after, t.where):
            if parent is not None:
                visit(index[parent])
        done.add(t.name)
        out.append(t)

    for t in tasks:
        visit(t)
    return out


def check_task_graph(tasks: list[TaskSpec]) -> None:
    """``ValueError`` naming the key: duplicate names, unknown or non-binary ``after`` / ``where``
    targets, cycles, outputs that collide with a task or with ``score``."""
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"tasks: names must be unique; repeated: {dupes}")
    index = by_name(tasks)
    for i, t in enumerate(tasks):
        for key in ("after", "where"):
            target = getattr(t, key)
            if target is None:
                continue
            if target not in index:
                raise ValueError(f"tasks[{i}] ({t.name}).{key}: no task named {target!r}; tasks: {names}")
            if not index[target].is_binary:
                raise ValueError(
                    f"tasks[{i}] ({t.name}).{key}: {target!r} is a {index[target].type} task; "
                    f"{key} must name a binary task (its label decides the rows)"
                )
    for t in tasks:
        _walk(index, [t.name])
    outputs = output_names(tasks)
    clashes = sorted({o for o in outputs if outputs.count(o) > 1} | ({SCORE} & set(outputs)))
    if clashes:
        raise ValueError(
            f"tasks: output names {clashes} collide (a task's name, a funnel stage's <name>_given_<after>, "
            f"or {SCORE!r}); rename the task"
        )


def _walk(index: dict[str, TaskSpec], path: list[str]) -> None:
    """Depth-first over after/where edges from ``path[-1]``; ``ValueError`` on reaching a name twice."""
    current = index[path[-1]]
    for parent in (current.after, current.where):
        if parent is None:
            continue
        if parent in path:
            cycle = " -> ".join([*path[path.index(parent):], parent])
            raise ValueError(f"tasks: after/where edges form a cycle: {cycle}")
        _walk(index, [*path, parent])
