"""Every multi-task architecture of SPEC §9 from sharded training to serving (issue 16): one epoch on 2
gloo ranks, exported, served, and the server's scores equal to batch scoring of the same rows."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys_mtl.data.synthetic import GeneratorSpec, generate
from recsys_mtl.export.export import export_run
from tests.serving.conftest import served_and_batch_scores
from tests.train.conftest import check, cli_batch

SPEC = GeneratorSpec(rows=4_000, num_users=400, num_items=200, rows_per_file=2_000, row_group_size=500, seed=3)
SMALL = ["data.batch_size=256", "model.tower_dims=[8]", "model.dense_dims=[8]", "train.epochs=1"]
ARCHITECTURES = {
    "sluice": ["model.backbone=sluice", "model.hidden_dims=[16,16]"],
    "soft_sharing": ["model.backbone=soft_sharing", "model.hidden_dims=[16]", "model.soft_sharing_penalty=trace"],
    "sparse_moe": ["model.backbone=sparse_moe", "model.hidden_dims=[16]", "model.num_experts=8", "model.moe_top_k=2"],
    "dselect": ["model.backbone=sparse_moe", "model.hidden_dims=[16]", "model.moe_router=dselect"],
    # the two compositions together, on the default backbone
    "pepnet_gating+aitm": ["model.hidden_dims=[16]", "model.gating={domain_features: [device, hour]}", "model.tower_transfer=aitm"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("architectures")
    generate(out, SPEC)
    return out


@pytest.fixture(scope="module")
def runs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Each architecture trained by ``recsys-mtl train --nproc 2``, the launchers one after another in one fresh
    process (``cli_batch``: the launcher imports torch once; its ranks are fresh processes each time)."""
    root = tmp_path_factory.mktemp("runs")
    runs = {name: root / str(i) / "run" for i, name in enumerate(ARCHITECTURES)}
    results = cli_batch(*(
        ["train", "--config", str(data / "config.yaml"), "--out", str(run), "--nproc", "2", *SMALL, *ARCHITECTURES[name]]
        for name, run in runs.items()
    ))
    return {name: (run, result) for (name, run), result in zip(runs.items(), results, strict=True)}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_trained_on_two_ranks_exported_and_served_as_batch_scoring_scores(data, runs, tmp_path, name):
    run, result = runs[name]
    check(result)
    version, _ = export_run(run, tmp_path / "models", version="v1")
    rows = pq.read_table(next(iter(sorted((data / "test").glob("*.parquet"))))).slice(0, 16)
    served, batch = served_and_batch_scores(version, rows)
    assert all(np.isfinite(c["score"]) for c in served)
    np.testing.assert_allclose([c["score"] for c in served], batch["score"], rtol=1e-5)
    for output in ("click", "conversion", "watch_time"):
        np.testing.assert_allclose([c[output] for c in served], batch[output], rtol=1e-5, atol=1e-7, err_msg=output)
    assert json.loads((run / "metrics.json").read_text())["steps"] > 0
