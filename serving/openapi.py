"""The OpenAPI description of ``POST /v1/score``: the body is parsed by hand (orjson, columnar
checks), so its schema and an example built from the model's feature config are declared here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from recsys_mtl.config import DenseFeature, MultiHotFeature, load_config
from recsys_mtl.export.artifact import CONFIG, ArtifactError, resolve_model_path

log = logging.getLogger("serving")

FEATURE_VALUE = {
    "description": "an id (integer or string), a list of ids (multi-hot), a number (dense) or null",
    "anyOf": [
        {"type": "integer"}, {"type": "string"}, {"type": "number"},
        {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}, {"type": "null"},
    ],
}
FEATURES = {"type": "object", "additionalProperties": FEATURE_VALUE}


def _example(model: Path) -> dict[str, Any]:
    """A request over the model's features, placed by their configured ``side``."""
    try:
        config = load_config(resolve_model_path(model) / CONFIG)
    except (ArtifactError, OSError, ValueError) as exc:
        log.warning("no example request in /docs: %s", exc)
        return {"user": {"user_id": 42}, "context": {}, "candidates": [{"item_id": 1001}, {"item_id": 1002}]}
    request: dict[str, Any] = {"request_id": "r-1", "user": {}, "context": {}, "candidates": [{}, {}]}
    for i, f in enumerate((*config.features.id_features, *config.features.dense)):
        if isinstance(f, DenseFeature):
            values = [1.5, 19.9]
        elif isinstance(f, MultiHotFeature):
            values = [[3, 7], [5]]
        else:
            values = [i + 1, i + 2]
        if f.side == "item":
            for candidate, value in zip(request["candidates"], values, strict=True):
                candidate[f.name] = value
        else:
            request["context" if f.side == "context" else "user"][f.name] = values[0]
    return request


def request_body_schema(model: Path, max_candidates: int) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["candidates"],
        "additionalProperties": False,
        "properties": {
            "request_id": {"type": "string", "description": "echoed back (default: X-Request-ID, else generated)"},
            "user": {**FEATURES, "description": "request-level features, encoded once for all candidates"},
            "context": {**FEATURES, "description": "request-level features, encoded once for all candidates"},
            "candidates": {
                "type": "array", "minItems": 1, "maxItems": max_candidates, "items": FEATURES,
                "description": "one object per item; a feature here overrides the request-level one",
            },
        },
    }
    return {"required": True, "content": {"application/json": {"schema": schema, "example": _example(model)}}}


_ERROR = {"application/json": {"schema": {
    "type": "object", "properties": {"detail": {"type": "string"}, "reason": {"type": "string"}},
}}}
_SCORES = {"application/json": {"schema": {
    "type": "object",
    "properties": {
        "request_id": {"type": "string"},
        "model_version": {"type": "string"},
        "scores": {
            "type": "array",
            "description": "one entry per candidate, in request order",
            "items": {"type": "object", "properties": {
                name: {"type": "number"} for name in ("pctr", "pcvr", "pctcvr", "watch_time", "score")
            }},
        },
    },
}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "scores per candidate", "content": _SCORES},
    400: {"description": "the body is not JSON", "content": _ERROR},
    413: {"description": "body or candidate list too large", "content": _ERROR},
    422: {"description": "the request does not fit the model's features", "content": _ERROR},
}
