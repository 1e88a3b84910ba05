"""``id_map: managed`` from sharded training to serving (issue 15, item 4): a 2-rank run whose user ids
overflow their table (so ids are evicted) keeps its id-to-row map in its checkpoints; export, ``score``
and the server map an id to the row training gave it and an unseen id to the miss row; a warm start
re-lays the ids out for a resized table, and the sharded model then reads the rows the unsharded one
does; a resume at another world size is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from recsys_mtl.data.quality import DataQuality
from recsys_mtl.export.export import export_run
from recsys_mtl.export.load import load_artifact, load_scorer
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.hashing import hash_int64
from recsys_mtl.features.processor import FeatureProcessor
from recsys_mtl.features.sparse import MANAGED_ID_SPACE
from recsys_mtl.models.managed import FREE, layout, miss_rows
from recsys_mtl.train.run_dir import load_run
from serving.request import feature_rules, parse_request
from tests.conftest import SMALL_MODEL
from tests.serving.conftest import make_client
from tests.train.conftest import check, cli, evaluate_unsharded, main_in_process

USER_ROWS = 256  # < the 2,000 users: the table fills and evicts


def _managed(config_path: Path, out: Path, user_rows: int) -> Path:
    raw = yaml.safe_load(config_path.read_text())
    raw["data"].update(train=str(config_path.parent / "train"), eval=str(config_path.parent / "test"))
    sparse = {f["name"]: f for f in raw["features"]["sparse"]}
    sparse["user_id"].update(id_map="managed", num_embeddings=user_rows, eviction_interval=2)
    sparse["item_id"].update(id_map="managed", num_embeddings=2048, eviction="lfu", eviction_interval=2)
    path = out / f"managed_{user_rows}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def managed_run(small_config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("managed")
    run = out / "run"
    check(cli("train", "--config", str(_managed(small_config_path, out, USER_ROWS)), "--out", str(run), "--nproc", "2", *SMALL_MODEL))
    version, _ = export_run(run, out / "models", version="v1")
    return run, version


def _rows(model, kjt) -> dict[str, torch.Tensor]:
    """The row each id of the managed features reads (the managed-collision modules, eval mode)."""
    remapped = model.managed._managed_collision_collection(kjt).to_dict()
    return {name: jt.values() for name, jt in remapped.items()}


def test_train_score_and_the_server_map_an_id_to_the_same_row(managed_run):
    run, version = managed_run
    artifact = load_artifact(version)
    config = artifact.config
    loaded = load_run(run)
    modules = loaded.module.model.managed._managed_collision_collection._managed_collision_modules
    held = modules["user_id"]._mch_sorted_raw_ids
    admitted = held[held != FREE]
    assert len(admitted) == USER_ROWS - 2  # full: each of the 2 shards keeps its last row as miss row
    train_ids = pq.read_table(config.data.train, columns=["user_id"]).column("user_id").to_numpy()
    hashed = 1 + (hash_int64(train_ids) % np.uint64(MANAGED_ID_SPACE - 1)).astype(np.int64)
    assert set(admitted.tolist()) <= set(hashed.tolist())  # only ids training saw
    assert int(modules["user_id"]._current_iter_tensor) > 0

    rows = pq.read_table(next(iter(sorted(Path(config.data.eval).glob("*.parquet"))))).slice(0, 8)
    rows = rows.drop_columns(["click", "conversion", "watch_time"])
    users = rows.column("user_id").to_pylist()
    users[0] = 10**12  # never seen
    rows = rows.set_column(rows.schema.get_field_index("user_id"), "user_id", pa.array(users, pa.int64()))
    trained = FeatureProcessor(config, DenseStats.load(run / "dense_stats.json"), with_labels=False).encode(rows, DataQuality())
    scorer = load_scorer(version)
    candidates = [
        {f.name: rows.column(f.source_column)[i].as_py() for f in (*config.features.id_features, *config.features.dense)}
        for i in range(rows.num_rows)
    ]
    assert artifact.meta["id_types"]["user_id"] == "int"  # the server hashes a request's ids as training did
    served = parse_request(json.dumps({"candidates": candidates}).encode(), feature_rules(config, artifact.meta["id_types"]), 64)
    served, scored = served.encode(scorer), scorer.encode(rows)
    for f in config.features.id_features:
        np.testing.assert_array_equal(scored[f.name].values, trained[f.name].values, err_msg=f.name)
        np.testing.assert_array_equal(served[f.name].values, trained[f.name].values, err_msg=f.name)

    kjt = scorer.processor.process(rows, quality=DataQuality()).sparse
    by_run, by_artifact = _rows(loaded.module.model, kjt), _rows(artifact.model, kjt)
    for name in ("user_id", "item_id"):
        torch.testing.assert_close(by_artifact[name], by_run[name], rtol=0, atol=0)
    # the row training gave each id (the checkpoint's map), and to an unseen id the miss row (the last)
    # of the shard it was routed to in training
    ids = kjt.to_dict()["user_id"].values()
    position = torch.searchsorted(held, ids).clamp(max=len(held) - 1)
    found = held[position] == ids
    bounds = layout(modules["user_id"]._output_segments_tensor)
    torch.testing.assert_close(bounds, torch.tensor([0, USER_ROWS // 2, USER_ROWS]))
    expected = torch.where(found, modules["user_id"]._mch_remapped_ids_mapping[position], miss_rows(ids, bounds))
    torch.testing.assert_close(by_run["user_id"], expected, rtol=0, atol=0)
    assert not bool(found[0]) and int(by_run["user_id"][0]) in (USER_ROWS // 2 - 1, USER_ROWS - 1)

    with make_client(version) as client:
        response = client.post("/v1/score", json={"candidates": candidates})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose([c["score"] for c in response.json()["scores"]], scorer.score_table(rows)["score"], rtol=1e-5)


def test_a_warm_start_relays_the_ids_out_and_sharded_reads_the_rows_unsharded_does(managed_run, small_config_path, tmp_path):
    run, _ = managed_run
    # refused before anything starts: in this process (main_in_process)
    refused = main_in_process("train", "--config", str(run / "config.yaml"), "--out", str(run), "--resume", "--nproc", "1")
    assert refused.returncode == 2 and "managed-id tables ['item_id', 'user_id']" in refused.stderr, refused.stderr
    assert "Resume on 2 rank(s), or train into a new --out with --init-from" in refused.stderr

    warm = tmp_path / "warm"
    config = _managed(small_config_path, tmp_path, 128)  # resized: each shard keeps its 63 most recent ids
    check(cli("train", "--config", str(config), "--out", str(warm), "--nproc", "2", "--init-from", str(run), *SMALL_MODEL,
              "train.max_steps=4"))
    summary = json.loads((warm / "warm_start.json").read_text())
    weight = "model.managed._embedding_module.embedding_bags.user_id.weight"
    assert summary["resized"][weight] == f"126 of {USER_ROWS - 2} managed ids kept by id, 128 rows over 2 rank(s)"
    # the in-loop (sharded) evaluation equals the unsharded one of the same weights: every id the
    # re-laid-out map holds is found on the rank its id is routed to (4 steps: two admissions, which
    # evict ids and reset their rows on the CPU)
    metrics = json.loads((warm / "metrics.json").read_text())["metrics"]
    again = evaluate_unsharded(warm)
    for task, values in metrics.items():
        for name, value in values.items():
            assert again[task][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (task, name)
