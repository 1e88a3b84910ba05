"""``id_map: vocab`` from training to serving: the run saves the train split's vocabulary, export copies
it into the version (listed and checksummed), and training, ``score`` and the server map the same id
to the same row; an id unseen in training goes to the reserved bucket 0 (issue 15, item 3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from recsys_mtl.data.quality import DataQuality
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.data.synthetic import GeneratorSpec, generate
from recsys_mtl.export.artifact import META, ArtifactError, verify
from recsys_mtl.export.export import export_run
from recsys_mtl.export.load import load_artifact, load_scorer
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor
from recsys_mtl.features.sparse import NULL_BUCKET
from recsys_mtl.features.vocab import VOCAB_FILE, Vocabularies, vocab_features
from serving.request import feature_rules, parse_request
from tests.serving.conftest import make_client
from tests.train.conftest import check, cli

SPEC = GeneratorSpec(rows=3_000, num_users=300, num_items=150, rows_per_file=1_500, row_group_size=500, seed=5)


def _with_city_names(split: Path) -> None:
    """Give each file a string-id column ``city_name`` ("c<user_city>")."""
    for file in sorted(split.glob("*.parquet")):
        table = pq.read_table(file)
        name = pc.binary_join_element_wise("c", pc.cast(table.column("user_city"), pa.string()), "")
        pq.write_table(table.append_column("city_name", name), file, row_group_size=500)


@pytest.fixture(scope="module")
def vocab_version(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 1-process run whose city (string ids), brand (int ids, min_count 2, capped) and
    hist_categories (int id lists) use ``id_map: vocab``, trained a few steps, and its export."""
    data = tmp_path_factory.mktemp("vocab_data")
    generate(data, SPEC)
    for split in ("train", "test"):
        _with_city_names(data / split)
    raw = yaml.safe_load((data / "config.yaml").read_text())
    raw["data"] = {"train": str(data / "train"), "eval": str(data / "test"), "batch_size": 256}
    sparse = {f["name"]: f for f in raw["features"]["sparse"]}
    sparse["user_city"].update(column="city_name", id_map="vocab", num_embeddings=101)
    sparse["item_brand"].update(id_map="vocab", min_count=2, num_embeddings=64)
    raw["features"]["multi_hot"][0]["id_map"] = "vocab"
    config = data / "vocab.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = data / "run"
    overrides = ["model.hidden_dims=[16]", "model.tower_dims=[8]", "train.max_steps=4", "train.epochs=1"]
    check(cli("train", "--config", str(config), "--out", str(run), *overrides))
    path, _ = export_run(run, data / "models", version="v1")
    return run, path


def test_train_score_and_the_server_map_an_id_to_the_same_row(vocab_version):
    run, version = vocab_version
    artifact = load_artifact(version)
    config = artifact.config
    assert {f.name for f in vocab_features(config)} == {"user_city", "item_brand", "hist_categories"}
    # the run's vocabulary is the train split's, and the version holds it listed with a checksum
    built = Vocabularies.of_source(vocab_features(config), ParquetSource(config.data.train))
    for name in ("user_city", "item_brand", "hist_categories"):
        assert artifact.vocabs[name].ids.equals(built[name].ids)
    assert len(built["item_brand"]) == 63 and built.id_types()["user_city"] == "string"
    assert VOCAB_FILE in artifact.meta["files"] and artifact.meta["id_types"]["user_city"] == "string"
    assert (run / VOCAB_FILE).read_bytes() == (version / VOCAB_FILE).read_bytes()

    rows = pq.read_table(next(iter(sorted(Path(config.data.eval).glob("*.parquet")))))
    rows = rows.slice(0, 5).drop_columns(["click", "conversion", "watch_time"])
    unseen = pa.array(["no-such-city"] * 5)
    rows = rows.set_column(rows.schema.get_field_index("city_name"), "city_name", unseen)
    # training's processor (as train builds it from RUN/vocab.parquet), score's and the server's
    trained = FeatureProcessor(
        config, DenseStats.load(run / "dense_stats.json"), with_labels=False, vocabs=Vocabularies.load(run / VOCAB_FILE)
    ).encode(rows, DataQuality())
    scorer = load_scorer(version)
    scored = scorer.encode(rows)
    candidates = [
        {f.name: rows.column(f.source_column)[i].as_py() for f in (*config.features.id_features, *config.features.dense)}
        for i in range(rows.num_rows)
    ]
    rules = feature_rules(config, artifact.meta["id_types"])
    served = parse_request(json.dumps({"candidates": candidates}).encode(), rules, 64).encode(scorer)
    for f in config.features.id_features:
        np.testing.assert_array_equal(scored[f.name].values, trained[f.name].values, err_msg=f.name)
        np.testing.assert_array_equal(served[f.name].values, trained[f.name].values, err_msg=f.name)
        np.testing.assert_array_equal(served[f.name].lengths, trained[f.name].lengths, err_msg=f.name)
    assert (trained["user_city"].values == NULL_BUCKET).all()  # unseen in training: the reserved bucket
    known = built["item_brand"].ids.to_pylist()
    brands = rows.column("item_brand").to_pylist()
    expected = [known.index(b) + 1 if b in known else NULL_BUCKET for b in brands]
    assert trained["item_brand"].values.tolist() == expected
    # the server answers with the scores `score` computes for the same rows
    with make_client(version) as client:
        response = client.post("/v1/score", json={"candidates": candidates})
    assert response.status_code == 200, response.text
    got = [c["score"] for c in response.json()["scores"]]
    np.testing.assert_allclose(got, scorer.score_table(rows)["score"], rtol=1e-5)


def test_a_version_without_its_vocabulary_is_refused(vocab_version, tmp_path):
    _, version = vocab_version
    copy = tmp_path / "v1"
    shutil.copytree(version, copy)
    (copy / VOCAB_FILE).unlink()
    with pytest.raises(ArtifactError, match="vocab.parquet is missing or has the wrong size"):
        verify(copy)
    meta = json.loads((copy / META).read_text())  # delisted too: the config still needs it
    del meta["files"][VOCAB_FILE]
    (copy / META).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="vocab.parquet is missing: the config maps ids with id_map: vocab"):
        load_artifact(copy)
