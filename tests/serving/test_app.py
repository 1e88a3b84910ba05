"""The scoring API in process: same scores as batch scoring, request-level features encoded once,
clear 4xx answers for bad input, metrics, probes and the admin token."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families

from recsys_mtl.config import load_config
from serving.metrics import observe_many
from serving.rows import request_from_rows
from tests.serving.conftest import ADMIN_TOKEN, make_client
from tests.train.conftest import check, cli

GROUP = 10  # candidates per request


def shared_features_per_group(table: pa.Table, config, group: int) -> pa.Table:
    """``table`` with every user/context column copied from the first row of each block of ``group``
    rows: each block is then one request's candidates."""
    first = np.arange(table.num_rows) // group * group
    for f in (*config.features.id_features, *config.features.dense):
        if f.side in ("user", "context"):
            i = table.schema.get_field_index(f.source_column)
            table = table.set_column(i, f.source_column, table.column(f.source_column).take(pa.array(first)))
    return table


def post(client, body, **kwargs):
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post("/v1/score", content=content, headers={"content-type": "application/json"}, **kwargs)


def one_request(small_data, candidates: int = 3) -> dict:
    config = load_config(small_data / "config.yaml")
    return request_from_rows(pq.read_table(small_data / "test").slice(0, candidates), config, "r-1")


def test_server_scores_equal_batch_scores_of_the_same_rows(client, model_root, small_data, tmp_path):
    config = load_config(model_root / "v1" / "config.yaml")
    rows = shared_features_per_group(pq.read_table(small_data / "test").slice(0, 300), config, GROUP)
    pq.write_table(rows, tmp_path / "rows.parquet")
    out = tmp_path / "scores.parquet"
    check(cli("score", "--model", str(model_root), "--data", str(tmp_path / "rows.parquet"), "--out", str(out)))
    offline = pq.read_table(out)
    outputs = client.app.state.store.current.scorer.outputs
    # every task's output, the funnel stage's conditional one, then the score (classic generated tasks)
    assert outputs == ["click", "conversion", "conversion_given_click", "watch_time", "score"]
    assert offline.column_names == outputs
    for start in range(0, rows.num_rows, GROUP):
        response = post(client, request_from_rows(rows.slice(start, GROUP), config, f"r{start}"))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "v1" and body["request_id"] == f"r{start}"
        assert response.headers["x-request-id"] == f"r{start}"
        timing = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
        assert set(timing) == {"parse", "features", "forward", "total"} and float(timing["total"]) > 0
        assert all(list(s) == outputs for s in body["scores"])
        for name in outputs:
            online = np.array([s[name] for s in body["scores"]])
            expected = offline.column(name).to_numpy()[start : start + GROUP]
            np.testing.assert_allclose(online, expected, rtol=1e-5, atol=1e-7, err_msg=name)


def test_request_level_features_are_encoded_once_and_score_as_if_given_per_candidate(client, small_data, monkeypatch):
    request = one_request(small_data, candidates=40)
    scorer = client.app.state.store.current.scorer
    encoded_rows = {}
    encode = scorer.processor.encode

    def spy(table, quality, names=None):
        for name in names or []:
            encoded_rows[name] = table.num_rows
        return encode(table, quality, names)

    monkeypatch.setattr(scorer.processor, "encode", spy)
    shared = post(client, request).json()["scores"]
    assert encoded_rows["user_id"] == 1 and encoded_rows["hour"] == 1 and encoded_rows["item_id"] == 40
    per_candidate = {
        **request, "user": {}, "context": {},
        "candidates": [{**request["user"], **request["context"], **c} for c in request["candidates"]],
    }
    assert encoded_rows.clear() is None and post(client, per_candidate).json()["scores"] == shared
    assert encoded_rows["user_id"] == 40


def test_out_of_range_ids_map_like_training(client, small_data):
    scores = {}
    for label, brand in (("huge", 2**62), ("negative", -5), ("null", None), ("max", 2**63 - 1), ("valid", 3)):
        request = one_request(small_data, candidates=1)
        request["candidates"][0]["item_brand"] = brand
        response = post(client, request)
        assert response.status_code == 200, response.text
        scores[label] = response.json()["scores"][0]
    # identity ids outside the table go to the reserved bucket 0, as a null does (and as in training)
    assert scores["huge"] == scores["negative"] == scores["max"] == scores["null"] != scores["valid"]
    request = one_request(small_data, candidates=1)
    request["user"]["user_activity"] = 2**53 + 1  # an integer a double cannot hold exactly: rounded
    assert post(client, request).status_code == 200


BIG = {"candidates": [{"item_id": 1, "price": 1.0}] * 65}


@pytest.mark.parametrize(
    "body, status, reason, says",
    [
        (b"{not json", 400, "malformed_json", "not valid JSON"),
        (b'{"candidates": [{"item_id": 1, "price": NaN}]}', 400, "malformed_json", "NaN and Infinity"),
        (b'{"candidates": [{"item_id": 1, "price": 1e999}]}', 400, "malformed_json", "infinity"),
        (b"", 400, "empty_body", "empty"),
        (b"[1, 2]", 422, "bad_request_shape", "JSON object"),
        ({"user": {"user_id": 1}}, 422, "missing_candidates", "candidates must be a list"),
        ({"candidates": []}, 422, "empty_candidates", "at least one"),
        (BIG, 413, "too_many_candidates", "maximum of 64"),
        ({"candidates": [{"item_id": 1, "colour": "red"}]}, 422, "unknown_feature", "['colour']"),
        ({"candidates": [{"item_id": 1}], "users": {}}, 422, "unknown_field", "['users']"),
        ({"candidates": [{"price": 3.0}]}, 422, "missing_feature", "['item_id']"),
        ({"candidates": [{"item_id": 4}, {"price": 3.0}]}, 422, "missing_feature", "'item_id' missing in candidates[1]"),
        ({"user": {"item_id": None}, "candidates": [{}]}, 422, "missing_feature", "'item_id' missing in user"),
        ({"candidates": [{"item_id": 1}, {"item_id": "abc"}]}, 422, "bad_feature_value", "candidates[1].item_id"),
        ({"candidates": [{"item_id": 1.5}]}, 422, "bad_feature_value", "not an id"),
        ({"candidates": [{"item_id": True}]}, 422, "bad_feature_value", "boolean"),
        ({"candidates": [{"item_id": 2**63}]}, 422, "bad_feature_value", "64-bit"),
        (b'{"candidates": [{"item_id": 18446744073709551616}]}', 422, "bad_feature_value", "64-bit"),
        ({"candidates": [{"item_id": 1, "price": "cheap"}]}, 422, "bad_feature_value", "takes a number"),
        ({"user": {"hist_categories": 5}, "candidates": [{"item_id": 1}]}, 422, "bad_feature_value", "user.hist_categories"),
        ({"user": {"hour": 1}, "context": {"hour": 2}, "candidates": [{"item_id": 1}]}, 422, "duplicate_feature", "hour"),
        ({"user": [1], "candidates": [{"item_id": 1}]}, 422, "bad_request_shape", "user must be an object"),
        ({"candidates": [7]}, 422, "bad_request_shape", "candidates[0]"),
        ({"request_id": {"a": 1}, "candidates": [{"item_id": 1}]}, 422, "bad_request_id", "request_id"),
        ({"request_id": "r\u00e9-1", "candidates": [{"item_id": 1}]}, 422, "bad_request_id", "printable ASCII"),
    ],
)
def test_bad_input_gets_a_4xx_that_says_what_is_wrong(client, body, status, reason, says):
    response = post(client, body)
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason
    assert says in response.json()["detail"]


def test_oversized_bodies_are_refused_before_they_are_read(client):
    json = {"content-type": "application/json"}
    declared = client.post("/v1/score", content=b"{" + b" " * (300 << 10) + b"}", headers=json)
    assert declared.status_code == 413 and "at most" in declared.json()["detail"]

    def chunks():  # no content-length: the limit applies while streaming
        for _ in range(300):
            yield b" " * 1024

    streamed = client.post("/v1/score", content=chunks(), headers=json)
    assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]


def samples(client) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def test_metrics_count_requests_latency_candidates_scores_errors_and_version(client, small_data):
    before = samples(client)
    assert post(client, one_request(small_data, candidates=7)).status_code == 200
    assert post(client, {"candidates": []}).status_code == 422
    assert client.get("/nowhere").status_code == 404
    after = samples(client)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("recsys_http_requests_total", route="/v1/score", method="POST", status="2xx") == 1
    assert delta("recsys_http_requests_total", route="/v1/score", method="POST", status="4xx") == 1
    assert delta("recsys_http_requests_total", route="other", method="GET", status="4xx") == 1
    assert delta("recsys_http_request_duration_seconds_count", route="/v1/score") == 2
    assert delta("recsys_model_duration_seconds_count", stage="forward") == 1
    assert delta("recsys_model_duration_seconds_count", stage="features") == 1
    assert delta("recsys_candidates_per_request_sum") == 7
    assert delta("recsys_candidates_per_request_bucket", le="10.0") == 1
    for output in ("click", "conversion", "conversion_given_click"):
        assert delta("recsys_predicted_probability_count", output=output) == 7, output
    assert delta("recsys_predicted_value_count", output="watch_time") == 7
    assert delta("recsys_predicted_probability_count", output="watch_time") == 0
    assert delta("recsys_ranking_score_count") == 7
    assert delta("recsys_errors_total", reason="empty_candidates") == 1
    assert delta("recsys_errors_total", reason="not_found") == 1
    assert after[("recsys_model_info", (("version", "v1"),))] == 1


def test_batched_histogram_observation_equals_one_observe_per_value():
    values = np.array([0.0, 1e-4, 5e-4, 0.02, 0.02, 0.3, 1.0, 7.0, np.inf])
    batched, single = (Histogram(name, "h", buckets=(1e-4, 0.02, 0.5, 1.0), registry=None) for name in ("a", "b"))
    observe_many(batched, values)
    for v in values:
        single.observe(v)
    as_dict = [{s.labels.get("le"): s.value for s in h.collect()[0].samples if s.name.endswith("_bucket")} for h in (batched, single)]
    assert as_dict[0] == as_dict[1]
    assert batched._sum.get() == single._sum.get()
    observe_many(batched, np.array([np.nan]))  # skipped: observe() would turn the sum into NaN for good
    assert batched._sum.get() == single._sum.get()


def test_probes_and_docs(client):
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"status": "ready", "model_version": "v1"}
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["candidates"]["maxItems"] == 64
    example = body["example"]  # built from the model's features by side
    assert "user_id" in example["user"] and "hour" in example["context"] and "item_id" in example["candidates"][0]
    answer = post(client, example)
    assert answer.status_code == 200
    # the response schema and example list the model's outputs, each said to be a probability or an expected value
    ok = spec["paths"]["/v1/score"]["post"]["responses"]["200"]["content"]["application/json"]
    outputs = ok["schema"]["properties"]["scores"]["items"]["properties"]
    assert list(outputs) == list(answer.json()["scores"][0]) == ["click", "conversion", "conversion_given_click", "watch_time", "score"]
    assert all("probability" in outputs[name]["description"] for name in ("click", "conversion", "conversion_given_click"))
    assert "expected value" in outputs["watch_time"]["description"] and "ranking score" in outputs["score"]["description"]
    assert outputs["click"]["maximum"] == 1 and "maximum" not in outputs["watch_time"]
    assert [list(s) for s in ok["example"]["scores"]] == [list(outputs)] * 2
    assert "pctr" not in json.dumps(spec) and "watch time" not in spec["info"]["description"]


def test_admin_reload_needs_the_bearer_token(client, model_root):
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"authorization": "Bearer wrong"}).status_code == 403
    ok = client.post("/admin/reload", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert ok.status_code == 200 and ok.json() == {"model_version": "v1", "changed": False, "previous": None, "rejected": None}
    with make_client(model_root, admin_token=None) as no_token:
        refused = no_token.post("/admin/reload", headers={"authorization": "Bearer anything"})
        assert refused.status_code == 403 and "RECSYS_MTL_ADMIN_TOKEN" in refused.json()["detail"]


def test_error_bodies_are_json_with_a_reason(client):
    wrong_method = client.get("/v1/score")
    assert wrong_method.status_code == 405 and json.loads(wrong_method.text)["reason"] == "method_not_allowed"
