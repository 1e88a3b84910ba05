"""Property-based fuzzing of ``POST /v1/score``: no body, however wrong, gets a 5xx."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = {"content-type": "application/json"}  # without it every body is a 415
# the generated dataset's features (tests/conftest.py): ids, a list of ids, numbers
IDS = ["user_id", "item_id", "item_category", "item_brand", "user_city", "user_age", "device", "hour"]
LISTS, NUMBERS = ["hist_categories"], ["price", "item_ctr_7d", "user_activity"]

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
ids = st.integers(min_value=-(2**63), max_value=2**63 - 1)
small_ids = st.integers(min_value=-3, max_value=3000)
# a valid value of each kind most of the time, anything JSON now and then
id_value = st.one_of(small_ids, small_ids, ids, st.none(), json_values)
list_value = st.one_of(st.lists(small_ids, max_size=25), st.lists(st.one_of(small_ids, st.none(), st.text(max_size=2))), json_values)
number_value = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70), st.none(), json_values)


def features(names: list[str], junk: bool = True):
    """A feature object over ``names`` (plus, rarely, an unknown name), values mostly valid."""
    kinds = {**dict.fromkeys(IDS, id_value), **dict.fromkeys(LISTS, list_value), **dict.fromkeys(NUMBERS, number_value)}
    known = st.fixed_dictionaries({}, optional={name: kinds[name] for name in names})
    unknown = st.dictionaries(st.sampled_from(["colour", "", "user id"]), json_values, max_size=1)
    with_unknown = st.builds(lambda a, b: {**a, **b}, known, unknown)
    return st.one_of(known, known, known, with_unknown, json_values) if junk else st.one_of(*[known] * 8, with_unknown)


candidate = st.builds(
    lambda item, rest: {"item_id": item, **rest},
    st.one_of(small_ids, small_ids, id_value), features(["item_category", "item_brand", "price", "item_ctr_7d", "hour"], junk=False),
)
candidate_lists = st.one_of(
    *[st.lists(candidate, min_size=1, max_size=8)] * 3, st.lists(candidate, max_size=70),
    st.lists(st.one_of(candidate, json_values), max_size=4), json_values,
)
requests = st.fixed_dictionaries(
    {"candidates": candidate_lists},
    optional={
        "request_id": st.one_of(*[st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1)] * 3, json_values),
        "user": features(["user_id", "user_city", "user_age", "hist_categories", "user_activity"]),
        "context": features(["device", "hour"]),
    },
)
valid_kinds = {
    **dict.fromkeys(IDS, st.one_of(small_ids, ids, st.none())), **dict.fromkeys(LISTS, st.lists(small_ids, max_size=25)),
    **dict.fromkeys(NUMBERS, st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70))),
}


def valid_features(names: list[str]):
    return st.fixed_dictionaries({}, optional={name: valid_kinds[name] for name in names})


valid_requests = st.fixed_dictionaries({
    "user": valid_features(["user_id", "user_city", "user_age", "hist_categories", "user_activity"]),
    "context": valid_features(["device", "hour"]),
    "candidates": st.lists(
        st.builds(lambda item, rest: {"item_id": item, **rest}, small_ids, valid_features(["item_category", "item_brand", "price", "item_ctr_7d"])),
        min_size=1, max_size=64,
    ),
})
garbage = st.dictionaries(st.sampled_from(["request_id", "user", "context", "candidates", "extra"]), json_values)


def _encode(body) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # integers past 64 bits: send them as the JSON text they are
        import json

        return json.dumps(body).encode()


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.one_of(valid_requests, requests, requests, garbage))
def test_near_valid_and_garbage_requests_never_get_a_5xx(client, body):
    response = client.post("/v1/score", content=_encode(body), headers=JSON)
    assert response.status_code < 500, (body, response.text)
    if response.status_code != 200:
        assert response.json()["detail"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=200), json_values.map(_encode)))
def test_raw_bytes_never_get_a_5xx(client, body):
    response = client.post("/v1/score", content=body, headers=JSON)
    assert response.status_code < 500, (body, response.text)
