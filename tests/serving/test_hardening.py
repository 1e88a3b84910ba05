"""Server hardening in process (issue 14, item 5): a client that goes away is not a server error, error
messages quote client input bounded, X-Request-ID follows the body's request_id rule, only JSON bodies
are scored, missing features are counted per feature, the admin token is read without surrounding
whitespace; and a null in a string-id list is no id, as in training."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import orjson
import pyarrow as pa
import pytest

from recsys_mtl.config import validate_config
from recsys_mtl.data.quality import DataQuality
from recsys_mtl.features.processor import FeatureProcessor
from serving.openapi import score_openapi
from serving.protocol import READ_TIMED_OUT
from serving.request import feature_rules, parse_request
from serving.settings import Settings
from tests.features.test_processor import RAW, STATS
from tests.serving.conftest import make_client
from tests.serving.test_app import one_request, post, samples

JSON = {"content-type": "application/json"}


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.mark.parametrize("timed_out, status, reason", [(False, 499, "client_disconnect"), (True, 408, "request_timeout")])
def test_a_client_gone_while_its_body_is_read_is_counted_apart_and_not_logged(client, caplog, timed_out, status, reason):
    """What uvicorn hands the app when a client closes mid-upload (or serving.protocol ends a slow one)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/score", "raw_path": b"/v1/score", "query_string": b"", "root_path": "", "state": {},
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }
    if timed_out:
        scope[READ_TIMED_OUT] = True
    incoming = [{"type": "http.request", "body": b'{"candid', "more_body": True}, {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    before = samples(client)
    with caplog.at_level(logging.INFO):
        asyncio.run(client.app(scope, receive, send))
    after = samples(client)
    assert sent[0]["status"] == status
    assert delta(before, after, "recsys_errors_total", reason=reason) == 1
    assert delta(before, after, "recsys_errors_total", reason="internal") == 0
    assert delta(before, after, "recsys_http_requests_total", route="/v1/score", method="POST", status="4xx") == 1
    assert delta(before, after, "recsys_http_requests_total", route="/v1/score", method="POST", status="5xx") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text


HUGE = "x" * 100_000


@pytest.mark.parametrize(
    "body, headers, path, reason",
    [
        ({"candidates": [{"item_id": 1, HUGE: 1}]}, JSON, "/v1/score", "unknown_feature"),
        ({"candidates": [{"item_id": 1, **{f"f{i}{HUGE[:50]}": 1 for i in range(2000)}}]}, JSON, "/v1/score", "unknown_feature"),
        ({"candidates": [{"item_id": 1}], HUGE: 1}, JSON, "/v1/score", "unknown_field"),
        ({"user": {HUGE: 1}, "context": {HUGE: 2}, "candidates": [{"item_id": 1}]}, JSON, "/v1/score", "duplicate_feature"),
        ({"candidates": [{"item_id": 1}]}, {**JSON, "x-request-id": HUGE}, "/v1/score", "bad_request_id"),
        ({"candidates": [{"item_id": 1}]}, {"content-type": "text/" + HUGE}, "/v1/score", "unsupported_media_type"),
        ({}, JSON, "/" + HUGE[:60_000], "not_found"),  # httpx sends at most 64 KiB of URL
    ],
)
def test_error_messages_quote_client_input_bounded(client, body, headers, path, reason):
    response = client.post(path, content=orjson.dumps(body), headers=headers)
    assert 400 <= response.status_code < 500 and response.json()["reason"] == reason
    assert len(response.content) < 1500, response.text[:300]
    assert "…" in response.json()["detail"] or "more)" in response.json()["detail"]


@pytest.mark.parametrize("header", [b"r" * 129, "r\u00e9-1".encode(), b"a\tb", b"a\x7f"])
def test_x_request_id_follows_the_body_request_id_rule(client, small_data, header):
    request = {**one_request(small_data, candidates=1), "request_id": None}
    refused = client.post("/v1/score", content=orjson.dumps(request), headers={**JSON, "x-request-id": header})
    assert refused.status_code == 400 and refused.json()["reason"] == "bad_request_id"
    assert "printable ASCII" in refused.json()["detail"]
    ok = client.post("/v1/score", content=orjson.dumps(request), headers={**JSON, "x-request-id": "trace-7 ok"})
    assert ok.status_code == 200 and ok.json()["request_id"] == ok.headers["x-request-id"] == "trace-7 ok"


@pytest.mark.parametrize(
    "content_type, status",
    [
        (None, 415), ("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("multipart/form-data; boundary=x", 415),
        ("application/jsonx", 415), ("application/json", 200), ("Application/JSON; charset=utf-8", 200),
        ("application/vnd.ranker+json", 200),
    ],
)
def test_only_json_bodies_are_scored(client, small_data, content_type, status):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/score", content=orjson.dumps(one_request(small_data, candidates=2)), headers=headers)
    assert response.status_code == status, response.text
    if status == 415:
        assert response.json()["reason"] == "unsupported_media_type" and "application/json" in response.json()["detail"]


def test_missing_features_are_counted_per_feature(client, small_data):
    request = one_request(small_data, candidates=3)
    del request["user"]["user_city"]  # request level: missing for every candidate
    for c in request["candidates"][:2]:
        del c["item_brand"]
    request["candidates"][2]["item_brand"] = None
    request["candidates"][0]["price"] = None  # a dense one
    before = samples(client)
    assert post(client, request).status_code == 200
    after = samples(client)
    counted = {
        f: delta(before, after, "recsys_missing_features_total", feature=f) for f in ("user_city", "item_brand", "price", "item_id")
    }
    assert counted == {"user_city": 3, "item_brand": 3, "price": 1, "item_id": 0}


def test_the_admin_token_is_read_without_surrounding_whitespace(model_root, monkeypatch):
    monkeypatch.setenv("RECSYS_MTL_MODEL", str(model_root))
    monkeypatch.setenv("RECSYS_MTL_ADMIN_TOKEN", " tok-1\n")  # as read from a mounted secret file
    assert Settings.from_env().admin_token == "tok-1"
    monkeypatch.setenv("RECSYS_MTL_ADMIN_TOKEN", " \n")  # blank: unset (admin routes refuse), not a token
    assert Settings.from_env().admin_token is None
    with make_client(model_root, admin_token="tok-1\n") as client:
        assert client.post("/admin/reload", headers={"authorization": "Bearer tok-1"}).status_code == 200
    with make_client(model_root, admin_token="\n") as client:
        blank = client.post("/admin/reload", headers={"authorization": "Bearer anything"})
        assert blank.status_code == 403 and blank.json()["reason"] == "admin_disabled"


RULES_CONFIG = validate_config(RAW)  # hashed user/city/tags, identity hour/hist
ID_TYPES = {"user": "int", "city": "string", "tags": "string"}


def test_a_null_in_a_string_id_list_is_no_id_as_in_training():
    rules = feature_rules(RULES_CONFIG, ID_TYPES)
    body = {"candidates": [{"tags": [5, None], "city": 5}, {"tags": None, "city": None}, {"tags": ["5", None, 7]}]}
    parsed = parse_request(orjson.dumps(body), rules, 10)
    processor = FeatureProcessor(RULES_CONFIG, STATS, with_labels=False)
    served = processor.encode(parsed.candidates, DataQuality(), parsed.candidate_names)
    training_rows = pa.table({
        "tags": pa.array([["5", None], None, ["5", None, "7"]], pa.list_(pa.string())),
        "city_name": pa.array(["5", None, None], pa.string()),
    })
    trained = processor.encode(training_rows, DataQuality(), ["tags", "city"])
    for name in ("tags", "city"):
        np.testing.assert_array_equal(served[name].values, trained[name].values, err_msg=name)
        np.testing.assert_array_equal(served[name].lengths, trained[name].lengths, err_msg=name)
    assert served["tags"].values[1] == 0 and list(served["tags"].lengths) == [2, 0, 3]  # the reserved bucket; no ids


def test_the_openapi_example_gives_ids_of_the_type_each_feature_was_trained_on():
    rules = feature_rules(RULES_CONFIG, ID_TYPES)
    body = score_openapi(RULES_CONFIG, rules, 64)["openapi_extra"]["requestBody"]["content"]["application/json"]
    example = body["example"]
    given = {k: v for part in (example["user"], example["context"], example["candidates"][0]) for k, v in part.items()}
    assert isinstance(given["city"], str) and all(isinstance(t, str) for t in given["tags"])
    assert isinstance(given["user"], int) and isinstance(given["hour"], int) and all(isinstance(h, int) for h in given["hist"])
    parse_request(orjson.dumps(example), rules, 64)  # and the server takes it
