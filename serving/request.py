"""A scoring request, from JSON bytes to the feature tables the model's ``FeatureProcessor`` encodes.

Validation is columnar: each feature's values over all candidates go to Arrow in one call, and Arrow's
type inference says whether they are ids, lists of ids or numbers; only a request that fails is walked
value by value, to name the candidate and feature at fault.

Shapes: C candidates; request-level features (``user`` and ``context``) form a 1-row table encoded
once and repeated for the C candidates; per-candidate features form a C-row table.

Error messages quote what the client sent only through ``clip`` / ``quoted_names`` (bounded length), so
a 4 MB feature name or 10,000 unknown features never come back in a 4 MB answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from recsys_mtl.config import Config, DenseFeature, MultiHotFeature
from recsys_mtl.export.scorer import Scorer
from recsys_mtl.features.processor import Encoded, repeat_rows

TOP_LEVEL = ("request_id", "user", "context", "candidates")
_REQUEST_ID = re.compile(r"[\x20-\x7e]{1,128}")
REQUEST_ID_RULE = "1 to 128 printable ASCII characters (it is echoed in the X-Request-ID header)"
ECHO_CHARS = 64  # at most this much of any client-given text is quoted in an error message
ECHO_NAMES = 5  # and at most this many of its names


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis says it was cut): client input in a message."""
    return text if len(text) <= limit else text[:limit] + "…"


def quoted_names(names: Iterable[str]) -> str:
    """``['a', 'b', … (N more)]``: client-given names, each clipped, the first few of them."""
    names = list(names)
    shown = ", ".join(repr(clip(n)) for n in names[:ECHO_NAMES])
    more = f", … ({len(names) - ECHO_NAMES} more)" if len(names) > ECHO_NAMES else ""
    return f"[{shown}{more}]"


def valid_request_id(value: str) -> bool:
    """A request id the server echoes (body ``request_id`` or ``X-Request-ID``): ``REQUEST_ID_RULE``."""
    return _REQUEST_ID.fullmatch(value) is not None


class RequestError(Exception):
    """Input the server refuses: an HTTP status, a short machine-readable reason and a message that
    says what was wrong and what to send instead."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclass(frozen=True)
class FeatureRule:
    """How one feature's JSON values become an Arrow column (named as the training data's column)."""

    name: str
    column: str
    kind: str  # sparse | multi_hot | dense
    id_type: str | None  # "int" | "string" for id features when training's column type is known
    required: bool

    @property
    def expected(self) -> str:
        ids = {"int": "integer ids", "string": "string ids", None: "integer or string ids"}[self.id_type]
        if self.kind == "dense":
            return "a number or null"
        if self.kind == "multi_hot":
            return f"a list of {ids} or null"
        return f"one of the {ids} (or null)"


def feature_rules(config: Config, id_types: dict[str, str]) -> dict[str, FeatureRule]:
    """``id_types``: training's column type per hashed id feature (``identity`` features take ints)."""
    rules = {}
    for f in (*config.features.id_features, *config.features.dense):
        if isinstance(f, DenseFeature):
            kind, id_type = "dense", None
        else:
            kind = "multi_hot" if isinstance(f, MultiHotFeature) else "sparse"
            id_type = "int" if f.id_map == "identity" else id_types.get(f.name)
        rules[f.name] = FeatureRule(f.name, f.source_column, kind, id_type, f.required)
    return rules


@dataclass
class ScoreRequest:
    request_id: str | None
    shared: pa.Table  # 1 row: features given at request level (or by no one: nulls)
    candidates: pa.Table  # C rows: features given by at least one candidate
    shared_names: list[str]
    candidate_names: list[str]
    # candidates scored without each feature (absent or null; a request-level one counts for all C)
    missing: dict[str, int] = field(default_factory=dict)

    @property
    def num_candidates(self) -> int:
        return self.candidates.num_rows

    def encode(self, scorer: Scorer) -> Encoded:
        """The model's features for the C candidates: request-level ones encoded once (1 row) and
        repeated, beside the per-candidate ones."""
        shared = scorer.encode(self.shared, self.shared_names)
        return {**repeat_rows(shared, self.num_candidates), **scorer.encode(self.candidates, self.candidate_names)}


def per_candidate(outputs: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """``{output: [C]}`` -> one ``{output: value}`` per candidate, in request order."""
    names = list(outputs)
    return [dict(zip(names, row, strict=True)) for row in zip(*(outputs[n].tolist() for n in names), strict=True)]


def parse_json(body: bytes) -> Any:
    if not body:
        raise RequestError(400, "empty_body", "the request body is empty; send a JSON object (see /docs)")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            400, "malformed_json",
            f"the request body is not valid JSON ({clip(str(exc), 200)}); note that NaN and Infinity are not JSON numbers: "
            "send null for a missing value",
        ) from None


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}
    return f"{kind.get(type(value), type(value).__name__)} {clip(orjson.dumps(value).decode(), 40)}"


def _value_problem(rule: FeatureRule, value: Any) -> str | None:
    """Why one JSON value is not a valid value of the feature (None: it is)."""
    if value is None:
        return None
    if rule.kind == "dense":
        return None if type(value) in (int, float, bool) and abs(value) < float("inf") else "not a number"
    values = value if rule.kind == "multi_hot" else [value]
    if rule.kind == "multi_hot" and type(value) is not list:
        return "not a list"
    for v in values:
        if type(v) is int:
            if rule.id_type == "string":
                continue  # a string id column: the int is sent as its decimal string
            if not -(2**63) <= v < 2**63:
                return "an integer id outside the 64-bit range (send it as a string if training had string ids)"
        elif type(v) is str:
            if rule.id_type == "int":
                return "a string id for a feature trained on integer ids"
        elif type(v) is float and abs(v) >= 2**63:  # JSON integers past 64 bits arrive as floats
            return "an integer id outside the 64-bit range (send it as a string if training had string ids)"
        elif not (v is None and rule.kind == "multi_hot"):
            return "not an id"
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _place(where: str, i: int) -> str:
    return f"candidates[{i}]" if where == "candidates" else where


def _column(rule: FeatureRule, values: list[Any], where: str) -> pa.Array:
    """One feature's values (one per row; ``where``: ``candidates`` or ``user`` / ``context``) -> an
    Arrow array of the training column's kind. Required features must have no null."""
    array = _typed_column(rule, values, where)
    if rule.required and array.null_count:
        first = next(i for i, v in enumerate(values) if v is None)
        raise RequestError(422, "missing_feature", f"required feature {rule.name!r} missing in {_place(where, first)}")
    return array


def _typed_column(rule: FeatureRule, values: list[Any], where: str) -> pa.Array:
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        array = None
    t = array.type if array is not None else None
    ok = False
    if t is not None:
        if rule.kind == "dense":
            ok = pa.types.is_null(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
        else:
            item = t.value_type if rule.kind == "multi_hot" and pa.types.is_list(t) else (None if rule.kind == "multi_hot" else t)
            if pa.types.is_null(t):
                ok = True
            elif item is not None and (pa.types.is_null(item) or pa.types.is_int64(item)):
                ok = rule.id_type != "string"
            elif item is not None and pa.types.is_string(item):
                ok = rule.id_type != "int"
    if ok:
        if rule.kind == "dense":
            return array.cast(pa.float64(), safe=False)  # large integers round, as float(x) would
        # all-null values (or only empty lists) carry no id type yet: give them the feature's
        id_type = pa.string() if rule.id_type == "string" else pa.int64()
        if pa.types.is_null(t):
            return pa.nulls(len(values), pa.list_(id_type) if rule.kind == "multi_hot" else id_type)
        if rule.kind == "multi_hot" and pa.types.is_null(t.value_type):
            return array.cast(pa.list_(id_type))
        return array
    for i, value in enumerate(values):
        problem = _value_problem(rule, value)
        if problem:
            raise RequestError(
                422, "bad_feature_value",
                f"{_place(where, i)}.{rule.name}: {problem} ({_describe(value)}); {rule.name} takes {rule.expected}",
            )
    if rule.kind == "dense":  # numbers Arrow would not take in one call (e.g. integers past int64)
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if rule.id_type == "string":  # ints among string ids: hashed as their decimal text, like training's strings
        # a null stays null (no id: the reserved bucket, as in training), in a list or alone
        as_text = [[_text(v) for v in x] if type(x) is list else _text(x) for x in values]
        return pa.array(as_text, pa.list_(pa.string()) if rule.kind == "multi_hot" else pa.string())
    raise RequestError(
        422, "mixed_id_types",
        f"{rule.name} mixes integer and string ids across {where}; training hashed one kind "
        f"of id per feature: send {rule.expected}",
    )


def _object(value: Any, place: str) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise RequestError(422, "bad_request_shape", f"{place} must be an object of features by name, got {_describe(value)}")
    return value


def parse_request(body: bytes, rules: dict[str, FeatureRule], max_candidates: int) -> ScoreRequest:
    """Validate a request body and build its feature tables; ``RequestError`` says what is wrong."""
    obj = parse_json(body)
    if type(obj) is not dict:
        raise RequestError(422, "bad_request_shape", f"the body must be a JSON object with {list(TOP_LEVEL)}, got {_describe(obj)}")
    unknown = [k for k in obj if k not in TOP_LEVEL]
    if unknown:
        raise RequestError(422, "unknown_field", f"unknown top-level field(s) {quoted_names(unknown)}; allowed: {list(TOP_LEVEL)}")
    request_id = obj.get("request_id")
    if type(request_id) is int:
        request_id = str(request_id)
    if request_id is not None and (type(request_id) is not str or not valid_request_id(request_id)):
        raise RequestError(422, "bad_request_id", f"request_id must be {REQUEST_ID_RULE}, got {_describe(request_id)}")
    user, context = _object(obj.get("user"), "user"), _object(obj.get("context"), "context")
    candidates = obj.get("candidates")
    if type(candidates) is not list:
        raise RequestError(422, "missing_candidates", "candidates must be a list of objects (features by name), one per item to score")
    if not candidates:
        raise RequestError(422, "empty_candidates", "candidates is empty: send at least one item to score")
    if len(candidates) > max_candidates:
        raise RequestError(
            413, "too_many_candidates",
            f"{len(candidates)} candidates exceed this server's maximum of {max_candidates}; split the request",
        )
    for i, c in enumerate(candidates):
        if type(c) is not dict:
            raise RequestError(422, "bad_request_shape", f"candidates[{i}] must be an object of features by name, got {_describe(c)}")
    both = sorted(set(user) & set(context))
    if both:
        raise RequestError(
            422, "duplicate_feature", f"feature(s) {quoted_names(both)} are given in both user and context; give each once"
        )
    shared = {**user, **context}
    candidate_keys = set().union(*candidates)
    unknown = sorted((set(shared) | candidate_keys) - set(rules))
    if unknown:
        raise RequestError(
            422, "unknown_feature", f"unknown feature(s) {quoted_names(unknown)}; this model's features: {sorted(rules)}"
        )
    missing = sorted(name for name, rule in rules.items() if rule.required and name not in shared and name not in candidate_keys)
    if missing:
        raise RequestError(
            422, "missing_feature", f"required feature(s) {missing} missing (give them in user/context, or in every candidate)"
        )
    shared_cols, candidate_cols, missing = {}, {}, {}
    for name, rule in rules.items():
        if name in candidate_keys:
            default = shared.get(name)  # a request-level value fills candidates that do not give one
            values = [c.get(name, default) for c in candidates]
            array = candidate_cols[rule.column] = _column(rule, values, "candidates")
            nulls = array.null_count
        else:
            array = shared_cols[rule.column] = _column(rule, [shared.get(name)], "user" if name in user else "context")
            nulls = len(candidates) if array.null_count else 0
        if nulls:
            missing[name] = nulls
    return ScoreRequest(
        request_id,
        pa.table(shared_cols) if shared_cols else pa.table({"_": [None]}),
        pa.table(candidate_cols) if candidate_cols else pa.table({"_": [None] * len(candidates)}),
        [n for n in rules if n not in candidate_keys],
        [n for n in rules if n in candidate_keys],
        missing,
    )
