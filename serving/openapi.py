"""The OpenAPI description of ``POST /v1/score``: the body is parsed by hand (orjson, columnar
checks), so its schema and an example built from the model's feature config are declared here, and the
response schema and example list the model's outputs (docs/tasks.md), each described as a probability
or an expected value. The app describes the version it serves: after a rollover ``/openapi.json`` is
built anew from the new version's config and id types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from recsys_mtl.config import Config, DenseFeature, MultiHotFeature
from recsys_mtl.tasks.graph import SCORE, TaskSpec, chain, output_names, probability_outputs
from recsys_mtl.tasks.outputs import predict, ranking_score
from serving.request import REQUEST_ID_RULE, FeatureRule

FEATURE_VALUE = {
    "description": "an id (integer or string), a list of ids (multi-hot), a number (dense) or null",
    "anyOf": [
        {"type": "integer"}, {"type": "string"}, {"type": "number"},
        {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}, {"type": "null"},
    ],
}
FEATURES = {"type": "object", "additionalProperties": FEATURE_VALUE}


def _ids(values: list[Any], id_type: str | None) -> list[Any]:
    """Example ids as the feature was trained: strings for string ids, else integers."""
    if id_type != "string":
        return values
    return [[str(v) for v in x] if isinstance(x, list) else str(x) for x in values]


def _example(config: Config | None, rules: Mapping[str, FeatureRule] | None = None) -> dict[str, Any]:
    """A request over the model's features, placed by their configured ``side``; ids of the type
    each feature was trained on (``rules``: the served version's, with training's id types)."""
    if config is None:
        return {"user": {"user_id": 42}, "context": {}, "candidates": [{"item_id": 1001}, {"item_id": 1002}]}
    request: dict[str, Any] = {"request_id": "r-1", "user": {}, "context": {}, "candidates": [{}, {}]}
    for i, f in enumerate((*config.features.id_features, *config.features.dense)):
        rule = rules.get(f.name) if rules is not None else None
        if isinstance(f, DenseFeature):
            values = [1.5, 19.9]
        elif isinstance(f, MultiHotFeature):
            values = _ids([[3, 7], [5]], rule.id_type if rule else None)
        else:
            values = _ids([i + 1, i + 2], rule.id_type if rule else None)
        if f.side == "item":
            for candidate, value in zip(request["candidates"], values, strict=True):
                candidate[f.name] = value
        else:
            request["context" if f.side == "context" else "user"][f.name] = values[0]
    return request


def request_body_schema(
    config: Config | None, max_candidates: int, rules: Mapping[str, FeatureRule] | None = None
) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["candidates"],
        "additionalProperties": False,
        "properties": {
            "request_id": {
                "type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[\\x20-\\x7e]+$",
                "description": f"echoed back (default: X-Request-ID, else generated); {REQUEST_ID_RULE}",
            },
            "user": {**FEATURES, "description": "request-level features, encoded once for all candidates"},
            "context": {**FEATURES, "description": "request-level features, encoded once for all candidates"},
            "candidates": {
                "type": "array", "minItems": 1, "maxItems": max_candidates, "items": FEATURES,
                "description": "one object per item; a feature here overrides the request-level one",
            },
        },
    }
    return {"required": True, "content": {"application/json": {"schema": schema, "example": _example(config, rules)}}}


def _number(value: float) -> str:
    return f"{value:g}"


def _score_formula(tasks: list[TaskSpec], combine: str, terms: dict[str, float]) -> str:
    probabilities = probability_outputs(tasks)
    used = [(name, w) for name, w in terms.items() if w]
    if not used:
        return "0"
    if combine == "sum":
        return " + ".join(f"{_number(w)}·{name}" for name, w in used)
    parts = []
    for name, e in used:
        base = name if name in probabilities else f"(1 + {name})"
        parts.append(base if e == 1 else f"{base}^{_number(e)}")
    return " × ".join(parts)


def output_descriptions(tasks: list[TaskSpec], combine: str, terms: dict[str, float]) -> dict[str, str]:
    """``{output: what it is}`` for every output of ``tasks`` and ``score`` (docs/tasks.md)."""
    out = {}
    for t in tasks:
        if t.is_binary and t.after:
            product = " × ".join(
                f"p({c.name})" if c.after is None else f"p({c.name} | {c.after})" for c in chain(tasks, t.name)
            )
            out[t.name] = f"probability of {t.name} over all impressions (funnel stage after {t.after}): {product}"
            out[t.conditional_output] = f"probability of {t.name} given {t.after}, p({t.name} | {t.after})"
        elif t.is_binary and t.where:
            out[t.name] = f"probability of {t.name} given {t.where}, p({t.name} | {t.where}) (trained on {t.where}'s positive rows)"
        elif t.is_binary:
            out[t.name] = f"probability of {t.name} (label column {t.label!r})"
        else:
            given = f" given {t.where} (rows where {t.where} is positive)" if t.where else ""
            out[t.name] = (
                f"expected value of label column {t.label!r}{given}, in that column's units (a {t.type} task; not a probability)"
            )
    out[SCORE] = f"ranking score ({combine}): {_score_formula(tasks, combine, terms)}"
    return out


def _example_outputs(tasks: list[TaskSpec], combine: str, terms: dict[str, float]) -> list[dict[str, float]]:
    """Two candidates' outputs from made-up tower logits, through the scorer's own functions."""
    logits = {
        t.name: torch.tensor([-1.5 - 0.3 * i, -2.5 - 0.3 * i] if t.is_binary else [3.5, 2.0], dtype=torch.float64)
        for i, t in enumerate(tasks)
    }
    outputs = predict(tasks, logits)
    outputs[SCORE] = ranking_score(outputs, probability_outputs(tasks), combine, terms)
    return [{name: float(f"{float(value[i]):.4g}") for name, value in outputs.items()} for i in range(2)]


def response_schema(config: Config | None) -> dict[str, Any]:
    """The 200 response of ``POST /v1/score``: per candidate, the model's outputs and ``score``."""
    if config is None:
        item: dict[str, Any] = {
            "type": "object", "additionalProperties": {"type": "number"},
            "description": "every output of the model (one per task, <task>_given_<after> for funnel stages) and score",
        }
        example = None
    else:
        tasks, combine, terms = config.task_specs(), config.ranking.combine, config.ranking_terms()
        probabilities = probability_outputs(tasks)
        described = output_descriptions(tasks, combine, terms)
        properties = {}
        for name in [*output_names(tasks), SCORE]:
            bounds = {"minimum": 0, "maximum": 1} if name in probabilities else ({} if name == SCORE else {"minimum": 0})
            properties[name] = {"type": "number", **bounds, "description": described[name]}
        item = {"type": "object", "required": list(properties), "properties": properties}
        example = {"request_id": "r-1", "model_version": "v1", "scores": _example_outputs(tasks, combine, terms)}
    schema = {
        "type": "object",
        "properties": {
            "request_id": {"type": "string"},
            "model_version": {"type": "string"},
            "scores": {"type": "array", "description": "one entry per candidate, in request order", "items": item},
        },
    }
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"application/json": content}


_ERROR = {"application/json": {"schema": {
    "type": "object", "properties": {"detail": {"type": "string"}, "reason": {"type": "string"}},
}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not JSON, or X-Request-ID is not a valid request id", "content": _ERROR},
    413: {"description": "body or candidate list too large", "content": _ERROR},
    415: {"description": "the Content-Type is not application/json", "content": _ERROR},
    422: {"description": "the request does not fit the model's features", "content": _ERROR},
    503: {"description": "no model loaded (not ready: every version found was rejected)", "content": _ERROR},
}


REQUEST_ID_HEADER = {
    "name": "X-Request-ID", "in": "header", "required": False,
    "description": f"the request id when the body has none (else one is generated); {REQUEST_ID_RULE}, else 400",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
}


def score_openapi(config: Config | None, rules: Mapping[str, FeatureRule] | None, max_candidates: int) -> dict[str, Any]:
    """``app.post`` keyword arguments describing ``POST /v1/score`` for a model of ``config`` (None:
    no model served) whose request rules are ``rules`` (the id type of each feature)."""
    return {
        "openapi_extra": {"requestBody": request_body_schema(config, max_candidates, rules), "parameters": [REQUEST_ID_HEADER]},
        "responses": {
            200: {
                "description": "every output of the model per candidate (probabilities and expected values) and the ranking score",
                "content": response_schema(config),
            },
            **ERROR_RESPONSES,
        },
    }
