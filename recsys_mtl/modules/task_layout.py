"""Where a module keeps each task's parameters, declared by the module itself.

Tasks are indexed 0..T-1 in the order of the model's towers. A module holding per-task state says so
with ``task_layout() -> TaskLayout``: its tensors laid out one block per task along some dimensions
(MMoE's gates ``[T * E, Din]``: a block of E rows per task), and its ModuleLists whose child t belongs to
task t (PLE's task gates, cross-stitch's columns). Code that carries weights from one task list to
another (warm start) reads these declarations to follow each task by name; ``collect`` gathers them
for a whole model under its qualified names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class PerTask:
    """A tensor with, along each dimension in ``dims``, task t's entries at ``t * block .. (t + 1) * block - 1``;
    entries after the T blocks (PLE's shared experts in its shared gate) belong to no task."""

    dims: tuple[int, ...]
    block: int


@dataclass(frozen=True)
class TaskLayout:
    """``tensors``: tensor name -> its ``PerTask`` layout; ``lists``: names of ModuleLists whose child t is
    task t's. Names are relative to the declaring module (qualified ones from ``collect``)."""

    tensors: dict[str, PerTask] = field(default_factory=dict)
    lists: tuple[str, ...] = ()


def per_task(block: int, *names: str, dims: tuple[int, ...] = (0,)) -> dict[str, PerTask]:
    """``{name: PerTask(dims, block)}`` for each of ``names`` (the common case: blocks of rows)."""
    return {name: PerTask(dims, block) for name in names}


def linear(name: str, block: int, bias: bool = True) -> dict[str, PerTask]:
    """A Linear ``name`` whose outputs come in blocks of ``block`` per task: its weight's and bias's rows."""
    return per_task(block, f"{name}.weight", *([f"{name}.bias"] if bias else []))


def bank(name: str, layers: int, block: int) -> dict[str, PerTask]:
    """An ``ExpertBank`` ``name`` of ``layers`` layers whose experts come in blocks of ``block`` per task."""
    return per_task(block, *(f"{name}.layers.{i}.{kind}" for i in range(layers) for kind in ("weight", "bias")))


def collect(model: nn.Module) -> TaskLayout:
    """Every declaration in ``model``, under ``model``'s qualified names (as in its ``state_dict``)."""
    tensors: dict[str, PerTask] = {}
    lists: list[str] = []
    for name, module in model.named_modules():
        declare = getattr(module, "task_layout", None)
        if declare is None:
            continue
        own, prefix = declare(), f"{name}." if name else ""
        tensors.update({prefix + key: layout for key, layout in own.tensors.items()})
        lists += [prefix + key for key in own.lists]
    return TaskLayout(tensors, tuple(lists))
