"""Which Parquet columns a config needs, of which Arrow types, and the check that names a bad one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from recsys_mtl.config import Config, MultiHotFeature
from recsys_mtl.errors import DataError


def _is_id(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_int_id(t: pa.DataType) -> bool:
    return pa.types.is_integer(t.value_type if pa.types.is_dictionary(t) else t)


def _is_id_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_id(t.value_type)


def _is_int_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_int_id(t.value_type)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


@dataclass(frozen=True)
class ColumnRule:
    """What one column must be: ``check(type)`` and the human description of allowed types."""

    column: str
    role: str
    allowed: str
    check: Callable[[pa.DataType], bool]


def column_rules(config: Config, *, with_labels: bool = True, extra_columns: Sequence[str] = ()) -> list[ColumnRule]:
    """Rules for every column the config reads (features, labels, group key, extras), each column once."""
    rules: dict[str, ColumnRule] = {}

    def add(rule: ColumnRule) -> None:
        rules.setdefault(rule.column, rule)

    for f in config.features.id_features:
        multi = isinstance(f, MultiHotFeature)
        kind = "multi_hot" if multi else "sparse"
        if f.id_map == "identity":
            check, allowed = (_is_int_list, "list<int>") if multi else (_is_int_id, "int (id_map: identity)")
        else:
            check, allowed = (_is_id_list, "list<int> or list<string>") if multi else (_is_id, "int or string")
        add(ColumnRule(f.source_column, f"{kind} feature {f.name!r}", allowed, check))
    for f in config.features.dense:
        add(ColumnRule(f.source_column, f"dense feature {f.name!r}", "int, float or bool", _is_number))
    if with_labels:
        for t in config.tasks:
            add(ColumnRule(t.label_column, f"label of task {t.name!r}", "int, float or bool", _is_number))
            if t.weight_column:
                add(ColumnRule(t.weight_column, f"weight_column of task {t.name!r}", "int, float or bool", _is_number))
    if config.group_key:
        add(ColumnRule(config.group_key, "group_key", "int or string", _is_id))
    for col in extra_columns:
        add(ColumnRule(col, "extra column", "int, float or bool", _is_number))
    return list(rules.values())


def check_schema(schema: pa.Schema, rules: list[ColumnRule], source: str) -> None:
    """Raise ``DataError`` naming the file and every missing or mistyped column."""
    problems = []
    for rule in rules:
        index = schema.get_field_index(rule.column)
        if index < 0:
            problems.append(f"missing column {rule.column!r} ({rule.role})")
        elif not rule.check(schema.field(index).type):
            problems.append(
                f"column {rule.column!r} ({rule.role}) has type {schema.field(index).type}; expected {rule.allowed}"
            )
    if problems:
        raise DataError(
            f"{source}: " + "; ".join(problems) + ". Fix the data, or point the feature config at the right "
            "column with `column:` (available columns: " + ", ".join(schema.names) + ")"
        )
