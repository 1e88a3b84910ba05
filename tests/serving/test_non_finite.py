"""A model that would answer NaN scores, or that is not exactly what was exported, never serves: a version
with non-finite weights or non-finite outputs on the warm-up batch, an unreadable metadata file, a link,
or a file its metadata does not list is rejected at startup (the server is then not ready, or serves an
older version) and at a reload or a poll (the server keeps its model), with the reason, once, in the
log, the reload's answer and ``recsys_model_reloads_total``."""

from __future__ import annotations

import logging
import math
import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from recsys_mtl.export.artifact import ArtifactError
from recsys_mtl.export.load import load_scorer
from serving.store import warm_up
from tests.export.tamper import BROKEN, huge, tampered_version
from tests.serving.conftest import ADMIN_TOKEN, make_client
from tests.serving.test_app import one_request, post

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def rejected_reloads(client) -> float:
    text = client.get("/metrics").text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    return sum(s.value for s in samples if s.name == "recsys_model_reloads_total" and s.labels == {"result": "rejected"})


def finite_scores(response) -> bool:
    return all(v is not None and math.isfinite(v) for row in response.json()["scores"] for v in row.values())


@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_root_whose_only_version_is_broken_is_not_ready_until_a_good_one_comes(broken, model_root, small_data, tmp_path, caplog):
    publish, reason = BROKEN[broken]
    root = tmp_path / "models"
    root.mkdir()
    publish(model_root / "v1", root / "v1")
    caplog.set_level(logging.ERROR, logger="serving")
    with make_client(root) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "not_ready", ready.text
        assert re.search(f"v1: .*{reason}", ready.json()["detail"]), ready.text
        assert any("NOT READY" in r.message and re.search(reason, r.message) for r in caplog.records)
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


def test_reload_and_poll_reject_broken_versions_once_and_keep_serving(model_root, small_data, tmp_path, caplog):
    root = tmp_path / "models"
    root.mkdir()
    # while "created" ordered the versions, a future one pinned its version for good
    tampered_version(model_root / "v1", root / "v1", None, created="2999-01-01T00:00:00+00:00")
    broken = {f"v{i}": entry for i, entry in enumerate(BROKEN.values(), start=2)}
    with make_client(root) as client:
        assert rejected_reloads(client) == 0
        for count, (version, (publish, reason)) in enumerate(broken.items(), start=1):
            publish(model_root / "v1", root / version)
            reload = client.post("/admin/reload", headers=ADMIN)
            assert reload.status_code == 409 and reload.json()["reason"] == "version_rejected", reload.text
            assert re.search(f"{version}: .*{reason}", reload.json()["detail"]), reload.text
            assert "still serving v1" in reload.json()["detail"]
            assert rejected_reloads(client) == count
        # each is reported once: asked again, the server neither repeats nor counts them
        again = client.post("/admin/reload", headers=ADMIN)
        assert again.json() == {"model_version": "v1", "changed": False, "previous": None, "rejected": None}, again.text
        assert rejected_reloads(client) == len(broken)
        scored = post(client, one_request(small_data))
        assert scored.status_code == 200 and scored.json()["model_version"] == "v1" and finite_scores(scored)
    caplog.set_level(logging.ERROR, logger="serving")
    caplog.clear()
    with make_client(root, poll_seconds=0.2) as client:
        # at startup the newer versions are all rejected (in one refresh, each counted) and v1 served
        assert client.get("/readyz").json() == {"status": "ready", "model_version": "v1"}
        assert rejected_reloads(client) == len(broken)
        # a "created" that is no date at all: the newest by name, served
        tampered_version(model_root / "v1", root / "v7", None, created=12345)
        deadline = time.monotonic() + 60
        while client.get("/readyz").json().get("model_version") != "v7":
            assert time.monotonic() < deadline, "no poll switched to v7"
            time.sleep(0.1)
        # finite weights whose outputs are not (products overflow): refused by the warm-up, found by a poll
        tampered_version(model_root / "v1", root / "v8", huge)
        while rejected_reloads(client) < len(broken) + 1:
            assert time.monotonic() < deadline, "no poll rejected v8"
            time.sleep(0.1)
        time.sleep(1.0)  # five more polls
        assert rejected_reloads(client) == len(broken) + 1
        assert client.app.state.store.current.scorer.version == "v7"
        scored = post(client, one_request(small_data))
        assert scored.status_code == 200 and scored.json()["model_version"] == "v7" and finite_scores(scored)
    logged = [r.message.split(":")[0] for r in caplog.records if " rejected: " in r.message]
    assert sorted(logged) == sorted(f"model version {v} rejected" for v in [*broken, "v8"]), logged


def test_warm_up_names_the_non_finite_outputs(model_root, tmp_path):
    scorer = load_scorer(tampered_version(model_root / "v1", tmp_path / "v3", huge))  # its weights are finite
    with pytest.raises(ArtifactError, match=r"v3 gives NaN or infinite outputs on the warm-up batch .*score 1 of 1"):
        warm_up(scorer)
