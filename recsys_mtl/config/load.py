"""Load, override, validate and save configs.

``key=value`` overrides address any value by its dotted path. List items are addressed by index or,
for lists of named items (features), by name: ``features.sparse.user_id.dim=32``. Values are parsed
as YAML, so ``data.shuffle=false`` is a bool and ``data.eval=null`` clears a key.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from recsys_mtl.config.schema import Config

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config that cannot be used; the message names each bad key and what is allowed."""


def _is_uri(path: str) -> bool:
    return "://" in path


def _resolve_data_paths(raw: dict[str, Any], base_dir: Path) -> None:
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for key in ("train", "eval"):
        value = data.get(key)
        if isinstance(value, str) and not _is_uri(value) and not Path(value).is_absolute():
            data[key] = str((base_dir / value).resolve())


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. data.batch_size=1024)")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip().split("."), parsed


def _list_index(items: list[Any], part: str, where: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if -len(items) <= index < len(items):
            return index
        raise ConfigError(f"override path {where}: index {index} out of range (list has {len(items)} items)")
    names = [item.get("name") for item in items if isinstance(item, dict)]
    if part in names:
        return names.index(part)
    raise ConfigError(f"override path {where}: no item named {part!r}; names here: {names}")


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of the raw config dict with ``key=value`` overrides applied (input untouched)."""
    out = copy.deepcopy(dict(raw))
    for text in overrides:
        path, value = _parse_override(text)
        node: Any = out
        for depth, part in enumerate(path[:-1]):
            where = ".".join(path[: depth + 1])
            if isinstance(node, list):
                node = node[_list_index(node, part, where)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise ConfigError(f"override {text!r}: {where!r} is a value, not a section")
        last = path[-1]
        if isinstance(node, list):
            node[_list_index(node, last, ".".join(path))] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {text!r}: parent of {last!r} is a value, not a section")
    return out


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model found by walking ``loc`` (skipping list indices) from ``model``."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        # unwrap tuple[X, ...] / X | None down to the model class
        for arg in (*getattr(annotation, "__args__", ()), annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
                break
    return sorted(getattr(current, "model_fields", {}))


def _format_errors(exc: ValidationError, source: str, schema: type[BaseModel] = Config) -> str:
    lines = [f"invalid config {source}:"]
    for err in exc.errors():
        loc = err["loc"]
        key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(schema, loc[:-1])
            lines.append(f"  {key}: unknown key; allowed here: {', '.join(allowed)}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {key or '<top level>'}: {message}{shown}")
    return "\n".join(lines)


def validate_section(schema: type[M], raw: Mapping[str, Any], source: str = "<dict>") -> M:
    """Validate a raw dict into a frozen ``schema`` instance; ``ConfigError`` lists every problem."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, schema)) from None


def validate_config(raw: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Validate a raw dict into a frozen ``Config``; ``ConfigError`` lists every problem."""
    return validate_section(Config, raw, source)


def read_mapping(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML file that must hold a mapping; ``ConfigError`` names the file otherwise."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        where = f" (base of {chain[-1]})" if chain else ""
        raise ConfigError(f"config file not found: {path}{where}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(raw).__name__}")
    return raw


def _section_of(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The config section class of field ``key`` of ``model``; None for a value (a list, a number, or a
    free-form mapping such as ``ranking.terms``)."""
    field = model.model_fields.get(key)
    annotation = field.annotation if field is not None else None
    for arg in (*getattr(annotation, "__args__", ()), annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any], schema: type[BaseModel] = Config) -> dict[str, Any]:
    """``top`` over ``base``: sections merge key by key; values (lists, and free-form mappings such as
    ``ranking.terms`` or ``train.sharding``) are replaced whole, so an overlay's terms are its own."""
    out = dict(base)
    for key, value in top.items():
        section = _section_of(schema, key)
        if section is not None and isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value, section)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_raw(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One YAML file as a dict with its data paths resolved against its own directory; a ``base:``
    key names a config (relative to this file) that this one overlays."""
    raw = read_mapping(path, chain)
    _resolve_data_paths(raw, path.parent.resolve())
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a path to another config, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in chain or base_path == path.resolve():
        raise ConfigError(f"{path}: base chain loops back to {base_path}")
    return _deep_merge(_read_raw(base_path, (*chain, path.resolve())), raw)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config (and its ``base:`` chain), apply ``key=value`` overrides, validate.

    Data paths in a file are relative to that file; data paths given as overrides, to the working
    directory.
    """
    path = Path(path)
    raw = apply_overrides(_read_raw(path), overrides)
    _resolve_data_paths(raw, Path.cwd())
    return validate_config(raw, str(path))


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain, YAML/JSON-serialisable dict of a config (tuples become lists)."""
    return config.model_dump(mode="json")


def dump_config(config: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with ``load_config``)."""
    Path(path).write_text(dump_config(config))
