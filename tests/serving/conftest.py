from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings

ADMIN_TOKEN = "s3cret-token"


def make_client(model: Path, **settings) -> TestClient:
    defaults = {"admin_token": ADMIN_TOKEN, "poll_seconds": 0, "max_candidates": 64, "max_body_bytes": 256 << 10}
    return TestClient(create_app(Settings(model=model, **{**defaults, **settings})), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(model_root: Path) -> Iterator[TestClient]:
    """The app in this process, lifespan run (model loaded and warmed), serving ``model_root``."""
    with make_client(model_root) as c:
        yield c
