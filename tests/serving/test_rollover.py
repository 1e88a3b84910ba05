"""The server as deployed (``recsys-mtl serve`` processes over HTTP): model rollover under continuous
traffic without a failed request, half-written versions never loaded, and Prometheus metrics summed
over several uvicorn workers."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families

from recsys_mtl.config import load_config
from recsys_mtl.export.artifact import META, WEIGHTS
from serving.launch import running_server
from serving.rows import request_from_rows
from tests.export.tamper import linked_outside, malformed_metadata
from tests.serving.conftest import ADMIN_TOKEN

TOKEN = {"RECSYS_MTL_ADMIN_TOKEN": ADMIN_TOKEN}


def add_version(root: Path, source: Path, name: str, created: Any, truncate: bool = False) -> None:
    """Publish a copy of ``source`` as version ``name`` the way export does (write aside, rename in)."""
    partial = root / f".{name}.partial"
    shutil.copytree(source, partial)
    meta = json.loads((partial / META).read_text())
    (partial / META).write_text(json.dumps({**meta, "version": name, "created": created}))
    if truncate:  # a copy cut short: its checksums cannot match
        with open(partial / WEIGHTS, "r+b") as f:
            f.truncate(4096)
    os.replace(partial, root / name)


class Traffic:
    """Scoring requests in a loop on another thread; every (status, model version) is recorded."""

    def __init__(self, url: str, body: dict, new_connection_each: bool = False):
        self.url, self.body, self.fresh = url, body, new_connection_each
        self.results: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        client = httpx.Client(timeout=30)
        while not self._stop.is_set():
            if self.fresh:
                client.close()
                client = httpx.Client(timeout=30)
            try:
                r = client.post(self.url + "/v1/score", json=self.body)
                self.results.append((r.status_code, r.json().get("model_version")))
            except httpx.HTTPError as exc:
                self.results.append((0, repr(exc)))
        client.close()

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def wait_for(self, version: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not (self.results and self.results[-1][1] == version):
            assert time.monotonic() < deadline, f"still {self.results[-1:]} after {timeout}s"
            time.sleep(0.05)


def a_request(small_data: Path) -> dict:
    return request_from_rows(pq.read_table(small_data / "test").slice(0, 50), load_config(small_data / "config.yaml"))


def versions_in_order(results: list[tuple[int, str | None]]) -> list[str]:
    out: list[str] = []
    for _, version in results:
        if not out or out[-1] != version:
            out.append(version)
    return out


def test_admin_reload_switches_versions_without_a_failed_request(model_root, small_data, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    add_version(root, model_root / "v1", "v0", "2026-01-01T00:00:00+00:00")
    add_version(root, model_root / "v1", "v1", 12345)  # a "created" that is no date: the newest by name all the same
    malformed_metadata(model_root / "v1", root / "v9")  # the newest, unreadable: rejected at startup
    log = tmp_path / "server.log"
    with running_server(root, "--poll-seconds", "0", log=log, env=TOKEN) as url, Traffic(url, a_request(small_data)) as traffic:
        time.sleep(1.0)
        add_version(root, model_root / "v1", "v3", "2026-03-01T00:00:00+00:00", truncate=True)  # broken
        add_version(root, model_root / "v1", "v2", "2026-02-01T00:00:00+00:00")
        linked_outside(model_root / "v1", root / "v4")  # a link to a complete version elsewhere
        time.sleep(0.5)
        assert traffic.results[-1][1] == "v1"  # polling is off: nothing changes until the admin asks
        assert httpx.post(url + "/admin/reload").status_code == 401
        reload = httpx.post(url + "/admin/reload", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
        assert reload.status_code == 200, reload.text
        rejected = reload.json()["rejected"]
        assert reload.json()["model_version"] == "v2" and "v3: " in rejected and "v4: a symbolic link" in rejected
        assert "v9" not in rejected  # reported once, at startup
        traffic.wait_for("v2")
        time.sleep(1.0)
        reloads = {s.labels["result"]: s.value for s in samples(url, "recsys_model_reloads_total")}
        assert reloads == {"loaded": 2, "rejected": 3}, reloads  # a version each: startup v9, the reload v4 and v3
    statuses = {status for status, _ in traffic.results}
    assert statuses == {200}, [r for r in traffic.results if r[0] != 200][:5]
    assert versions_in_order(traffic.results) == ["v1", "v2"]  # never a broken version, never back
    assert len(traffic.results) > 20
    text = log.read_text()
    assert text.count("model version v9 rejected: ") == 1 and "v9/metadata.json is unreadable" in text, text[-3000:]


def samples(url: str, name: str) -> list:
    text = httpx.get(url + "/metrics").text
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def test_two_workers_sum_their_metrics_and_follow_new_versions(model_root, small_data, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    add_version(root, model_root / "v1", "v1", "2026-01-01T00:00:00+00:00")
    body = a_request(small_data)
    with running_server(root, "--workers", "2", "--poll-seconds", "0.3", log=tmp_path / "server.log", env=TOKEN) as url:
        for _ in range(30):  # one connection each, so both workers answer some
            assert httpx.post(url + "/v1/score", json=body).status_code == 200
        scored = samples(url, "recsys_http_requests_total")
        total = sum(s.value for s in scored if s.labels["route"] == "/v1/score" and s.labels["status"] == "2xx")
        assert total == 30  # whichever worker answers the scrape, it reports both workers' counts
        assert sum(s.value for s in samples(url, "recsys_candidates_per_request_sum")) == 30 * 50
        # the score histograms too, per output: probabilities, expected values and the ranking score
        for metric, output in (("recsys_predicted_probability_count", "conversion_given_click"), ("recsys_predicted_value_count", "watch_time")):
            assert sum(s.value for s in samples(url, metric) if s.labels["output"] == output) == 30 * 50, (metric, output)
        assert sum(s.value for s in samples(url, "recsys_ranking_score_count")) == 30 * 50
        serving = {s.labels["pid"] for s in samples(url, "recsys_model_info") if s.value == 1}
        assert len(serving) == 2  # both workers loaded v1
        with Traffic(url, body, new_connection_each=True) as traffic:
            time.sleep(0.5)
            add_version(root, model_root / "v1", "v2", "2026-02-01T00:00:00+00:00")
            traffic.wait_for("v2")
            time.sleep(2.0)  # both workers have polled by now
        assert {status for status, _ in traffic.results} == {200}
        assert traffic.results[-1][1] == "v2"
        info = {(s.labels["pid"], s.labels["version"]): s.value for s in samples(url, "recsys_model_info")}
        assert sorted(v for (pid, v), value in info.items() if value == 1) == ["v2", "v2"]
