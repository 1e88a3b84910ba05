"""Serving a model of any task list (SPEC §2.1): a six-objective model (the generator's ``video``
preset) answers every output by name, with a histogram per output in /metrics and the same numbers as
``recsys-mtl score``; a ``combine: sum`` ranking scores Σ w · output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from recsys_mtl.config import load_config
from recsys_mtl.data.synthetic import PRESETS
from recsys_mtl.export.export import export_run
from serving.rows import request_from_rows
from tests.conftest import SMALL_MODEL
from tests.serving.conftest import ADMIN_TOKEN, make_client
from tests.serving.test_rollover import add_version
from tests.train.conftest import check, cli, main_in_process

VIDEO = PRESETS["video"]
OUTPUTS = [
    "click", "like", "like_given_click", "follow", "follow_given_click", "share",
    "finish", "finish_given_click", "watch_time", "score",
]
PROBABILITIES = [o for o in OUTPUTS if o not in ("watch_time", "score")]
SUM_TERMS = {"click": 1.0, "like_given_click": 0.5, "share": 2.0, "watch_time": 0.01}


@pytest.fixture(scope="module")
def video(video_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small video-preset dataset, a briefly trained one-rank run of it, and a model root holding
    ``v1`` (its configured product ranking) and ``sum`` (a weighted-sum ranking)."""
    assert VIDEO == ("click", "like", "follow", "share", "finish", "watch_time")
    out = tmp_path_factory.mktemp("video")
    check(cli(
        "train", "--config", str(video_data / "config.yaml"), "--out", str(out / "run"), *SMALL_MODEL,
        "train.max_steps=30", "data.eval=null",
    ))
    terms = "{" + ", ".join(f"{k}: {v}" for k, v in SUM_TERMS.items()) + "}"
    export_run(out / "run", out / "models", version="v1")
    export_run(out / "run", out / "sums", version="sum", overrides=["ranking.combine=sum", f"ranking.terms={terms}"])
    return {"data": video_data, "run": out / "run", "models": out / "models", "sums": out / "sums"}


@pytest.fixture(scope="module")
def video_client(video) -> Iterator[TestClient]:
    with make_client(video["models"]) as c:
        yield c


def post(client: TestClient, body: dict):
    return client.post("/v1/score", content=orjson.dumps(body), headers={"content-type": "application/json"})


def rows_request(video, start: int, count: int) -> dict:
    config = load_config(video["data"] / "config.yaml")
    return request_from_rows(pq.read_table(video["data"] / "test").slice(start, count), config, f"r{start}")


def histogram_counts(client: TestClient) -> dict[tuple[str, str], float]:
    """``{(histogram, output label or ""): count}`` of the score histograms."""
    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name.endswith("_count") and s.name.startswith(("recsys_predicted_", "recsys_ranking_score")):
                out[(s.name.removesuffix("_count"), s.labels.get("output", ""))] = s.value
    return out


def test_a_six_objective_model_answers_every_output_and_a_histogram_each(video_client, video):
    scorer = video_client.app.state.store.current.scorer
    assert scorer.outputs == OUTPUTS and scorer.probabilities == set(PROBABILITIES)
    before = histogram_counts(video_client)
    response = post(video_client, rows_request(video, 0, 12))
    assert response.status_code == 200, response.text
    scores = response.json()["scores"]
    assert len(scores) == 12 and all(list(s) == OUTPUTS for s in scores)
    for s in scores:
        assert all(0 <= s[o] <= 1 for o in PROBABILITIES) and s["watch_time"] > 0
        for stage in ("like", "follow", "finish"):  # entire-space = p(click) x p(stage | click)
            assert s[stage] == pytest.approx(s["click"] * s[f"{stage}_given_click"], rel=1e-5)
    # the configured product: click x (every other task's output)^0.5, (1 + watch_time) for the value
    terms = load_config(video["models"] / "v1" / "config.yaml").ranking_terms()
    for s in scores:
        expected = np.prod([(s[o] if o in PROBABILITIES else 1 + s[o]) ** e for o, e in terms.items()])
        assert s["score"] == pytest.approx(expected, rel=1e-4)

    after = histogram_counts(video_client)
    series = {
        **{("recsys_predicted_probability", o): 12 for o in PROBABILITIES},
        ("recsys_predicted_value", "watch_time"): 12,
        ("recsys_ranking_score", ""): 12,
    }
    for key, count in series.items():
        assert after.get(key, 0) - before.get(key, 0) == count, key
    assert ("recsys_predicted_probability", "watch_time") not in after
    assert ("recsys_predicted_value", "click") not in after

    documented = video_client.get("/openapi.json").json()["paths"]["/v1/score"]["post"]["responses"]["200"]
    items = documented["content"]["application/json"]["schema"]["properties"]["scores"]["items"]["properties"]
    assert list(items) == OUTPUTS
    assert "p(click) × p(like | click)" in items["like"]["description"]
    assert "p(like | click)" in items["like_given_click"]["description"]
    assert "expected value" in items["watch_time"]["description"]


def test_server_scores_of_every_output_equal_batch_scores(video_client, video, tmp_path):
    rows = pq.read_table(video["data"] / "test").slice(0, 40)
    config = load_config(video["data"] / "config.yaml")
    shared = [f.source_column for f in (*config.features.id_features, *config.features.dense) if f.side in ("user", "context")]
    for column in shared:  # one user's candidates: request-level features as in the first row
        i = rows.schema.get_field_index(column)
        rows = rows.set_column(i, column, rows.column(column).take(pa.array([0] * rows.num_rows)))
    pq.write_table(rows, tmp_path / "rows.parquet")
    out = tmp_path / "scores.parquet"
    # batch scoring works in one process: in this one (main_in_process, no fresh import of torch)
    check(main_in_process(
        "score", "--model", str(video["models"]), "--data", str(tmp_path / "rows.parquet"), "--out", str(out),
        "--keep", "row_id", "click", "--prefix", "pred_",
    ))
    offline = pq.read_table(out)
    assert offline.column_names == ["row_id", "click", *(f"pred_{o}" for o in OUTPUTS)]
    online = post(video_client, request_from_rows(rows, config, "all")).json()["scores"]
    for name in OUTPUTS:
        np.testing.assert_allclose(
            [s[name] for s in online], offline.column(f"pred_{name}").to_numpy(), rtol=1e-5, atol=1e-7, err_msg=name
        )
    clash = main_in_process("score", "--model", str(video["models"]), "--data", str(tmp_path / "rows.parquet"), "--out", str(out), "--keep", "click")
    assert clash.returncode == 2 and "--prefix" in clash.stderr


def test_a_sum_ranking_scores_the_weighted_sum_of_outputs(video):
    with make_client(video["sums"]) as client:
        response = post(client, rows_request(video, 100, 20))
        assert response.status_code == 200, response.text
        scores = response.json()["scores"]
        described = client.get("/openapi.json").json()["paths"]["/v1/score"]["post"]["responses"]["200"]
    assert all(list(s) == OUTPUTS for s in scores)
    expected = [sum(w * s[o] for o, w in SUM_TERMS.items()) for s in scores]
    np.testing.assert_allclose([s["score"] for s in scores], expected, rtol=1e-5)
    items = described["content"]["application/json"]["schema"]["properties"]["scores"]["items"]["properties"]
    assert items["score"]["description"] == "ranking score (sum): 1·click + 0.5·like_given_click + 2·share + 0.01·watch_time"


def test_openapi_describes_the_version_served_after_a_rollover(video, model_root, tmp_path):
    def described(client: TestClient) -> tuple[list[str], dict]:
        operation = client.get("/openapi.json").json()["paths"]["/v1/score"]["post"]
        items = operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["scores"]["items"]
        return list(items["properties"]), operation["requestBody"]["content"]["application/json"]["example"]

    root = tmp_path / "models"
    root.mkdir()
    add_version(root, model_root / "v1", "v1", "2026-01-01T00:00:00+00:00")  # the classic three-task model
    with make_client(root) as client:
        outputs, _ = described(client)
        assert outputs == ["click", "conversion", "conversion_given_click", "watch_time", "score"]
        add_version(root, video["models"] / "v1", "v2", "2026-02-01T00:00:00+00:00")  # six objectives
        reload = client.post("/admin/reload", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert reload.status_code == 200 and reload.json()["model_version"] == "v2", reload.text
        outputs, example = described(client)
        assert outputs == OUTPUTS
        assert post(client, example).json()["scores"][0].keys() == set(OUTPUTS)  # the example fits the new model
