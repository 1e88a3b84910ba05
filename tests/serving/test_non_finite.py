"""A model that would answer NaN scores never serves: a version with non-finite weights, or whose outputs
on the warm-up batch are not finite, is rejected at startup (the server is then not ready) and at a
reload or a poll (the server keeps its model), with the reason and ``recsys_model_reloads_total``."""

from __future__ import annotations

import logging
import math
import shutil
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from recsys_mtl.export.artifact import ArtifactError
from recsys_mtl.export.scorer import load_scorer
from serving.store import warm_up
from tests.export.tamper import huge, one_nan, tampered_version
from tests.serving.conftest import ADMIN_TOKEN, make_client
from tests.serving.test_app import one_request, post

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
NAN_ROW = one_nan("ebc.embedding_bags.item_id.weight")  # a row the warm-up batch does not read


def rejected_reloads(client) -> float:
    text = client.get("/metrics").text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    return sum(s.value for s in samples if s.name == "recsys_model_reloads_total" and s.labels == {"result": "rejected"})


def finite_scores(response) -> bool:
    return all(v is not None and math.isfinite(v) for row in response.json()["scores"] for v in row.values())


def test_a_root_whose_only_version_has_nan_weights_is_not_ready_until_a_good_one_comes(model_root, small_data, tmp_path, caplog):
    root = tmp_path / "models"
    root.mkdir()
    tampered_version(model_root / "v1", root / "v1", NAN_ROW)
    caplog.set_level(logging.ERROR, logger="serving")
    with make_client(root) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "not_ready", ready.text
        assert "v1" in ready.json()["detail"] and "1 of 47 weight tensors hold NaN" in ready.json()["detail"]
        assert "ebc.embedding_bags.item_id.weight" in ready.json()["detail"]
        assert any("NOT READY" in r.message and "hold NaN" in r.message for r in caplog.records)
        scored = post(client, one_request(small_data))
        assert scored.status_code == 503 and scored.json()["reason"] == "not_ready", scored.text
        assert rejected_reloads(client) == 1
        assert client.get("/healthz").status_code == 200  # alive: it waits for a servable version
        tampered_version(model_root / "v1", root / "v2", None)  # a good version, published later
        reload = client.post("/admin/reload", headers=ADMIN)
        assert reload.status_code == 200, reload.text
        assert reload.json()["model_version"] == "v2" and reload.json()["changed"] is True
        assert client.get("/readyz").json() == {"status": "ready", "model_version": "v2"}
        assert finite_scores(post(client, one_request(small_data)))


def test_reload_and_poll_reject_non_finite_versions_and_keep_serving(model_root, small_data, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(model_root / "v1", root / "v1")
    with make_client(root) as client:
        assert rejected_reloads(client) == 0
        # non-finite weights: refused when loaded
        tampered_version(model_root / "v1", root / "v2", NAN_ROW, created="2999-01-01T00:00:00+00:00")
        reload = client.post("/admin/reload", headers=ADMIN)
        assert reload.status_code == 409 and reload.json()["reason"] == "version_rejected", reload.text
        assert "v2" in reload.json()["detail"] and "1 of 47 weight tensors hold NaN" in reload.json()["detail"]
        assert "still serving v1" in reload.json()["detail"]
        assert rejected_reloads(client) == 1
        scored = post(client, one_request(small_data))
        assert scored.status_code == 200 and scored.json()["model_version"] == "v1" and finite_scores(scored)
    with make_client(root, poll_seconds=0.2) as client:
        # at startup the newest version (v2) is rejected and the one before it served
        assert client.get("/readyz").json() == {"status": "ready", "model_version": "v1"}
        assert rejected_reloads(client) == 1
        # finite weights whose outputs are not (products overflow): refused by the warm-up, found by a poll
        tampered_version(model_root / "v1", root / "v3", huge, created="2999-02-01T00:00:00+00:00")
        deadline = time.monotonic() + 60
        while rejected_reloads(client) < 2:
            assert time.monotonic() < deadline, "no poll rejected v3"
            time.sleep(0.1)
        assert client.app.state.store.current.scorer.version == "v1"
        scored = post(client, one_request(small_data))
        assert scored.status_code == 200 and scored.json()["model_version"] == "v1" and finite_scores(scored)
        assert client.get("/readyz").json() == {"status": "ready", "model_version": "v1"}


def test_warm_up_names_the_non_finite_outputs(model_root, tmp_path):
    scorer = load_scorer(tampered_version(model_root / "v1", tmp_path / "v3", huge))  # its weights are finite
    with pytest.raises(ArtifactError, match=r"v3 gives NaN or infinite outputs on the warm-up batch .*score 1 of 1"):
        warm_up(scorer)
