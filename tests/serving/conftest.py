from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from recsys_mtl.export.load import load_artifact, load_scorer
from serving.app import create_app
from serving.settings import Settings

ADMIN_TOKEN = "s3cret-token"


def make_client(model: Path, **settings) -> TestClient:
    defaults = {"admin_token": ADMIN_TOKEN, "poll_seconds": 0, "max_candidates": 64, "max_body_bytes": 256 << 10}
    return TestClient(create_app(Settings(model=model, **{**defaults, **settings})), raise_server_exceptions=False)


def served_and_batch_scores(version: Path, rows: pa.Table) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The server's scores of ``rows`` (one request, a candidate per row) and batch scoring's of the same rows."""
    config = load_artifact(version).config
    candidates = [
        {f.name: rows.column(f.source_column)[i].as_py() for f in (*config.features.id_features, *config.features.dense)}
        for i in range(rows.num_rows)
    ]
    batch = load_scorer(version).score_table(rows)
    with make_client(version) as client:
        response = client.post("/v1/score", json={"candidates": candidates})
    assert response.status_code == 200, response.text
    return response.json()["scores"], batch


@pytest.fixture(scope="module")
def client(model_root: Path) -> Iterator[TestClient]:
    """The app in this process, lifespan run (model loaded and warmed), serving ``model_root``."""
    with make_client(model_root) as c:
        yield c
