"""`recsys-mtl export`: artifact contents, safe and verified loading, int8 quantization, and that
an exported model scores exactly as the run it came from."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantEmbeddingBagCollection

from recsys_mtl.export.artifact import (
    META,
    WEIGHTS,
    ArtifactError,
    load_artifact,
    newest_version,
    read_metadata,
    verify,
)
from recsys_mtl.export.quantize import quantize_embeddings_int8
from recsys_mtl.export.scorer import load_scorer
from tests.train.conftest import check, cli


def test_export_of_a_two_rank_checkpoint_scores_like_the_run(small_run, model_root, small_data):
    meta = json.loads((model_root / "v1" / META).read_text())
    assert meta["format"] == "recsys-mtl-model/1" and meta["version"] == "v1"
    assert meta["source"]["world_size"] == 2 and meta["source"]["run"] == str(small_run.resolve())
    assert meta["metrics"]["tasks"]["ctr"]["auc"] > 0.5
    assert {"torch", "torchrec", "fbgemm-gpu-cpu", "python", "recsys-mtl"} <= set(meta["libraries"])
    assert meta["quantization"] is None and "created" in meta
    # the weights file is safetensors: an 8-byte header length, then a JSON header of tensors only
    raw = (model_root / "v1" / WEIGHTS).read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert all(v["dtype"] in ("F32", "I64", "U8") for k, v in header.items() if k != "__metadata__")

    table = pq.read_table(small_data / "test").slice(0, 1000)
    from_run, from_artifact = load_scorer(small_run).score_table(table), load_scorer(model_root).score_table(table)
    for name, values in from_run.items():
        np.testing.assert_array_equal(from_artifact[name], values, err_msg=name)


def test_a_tampered_or_half_copied_version_is_refused_and_skipped(model_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(model_root / "v1", root / "v1")
    shutil.copytree(model_root / "v1", root / "v2")
    meta = json.loads((root / "v2" / META).read_text())
    meta["created"] = "2999-01-01T00:00:00+00:00"  # the newest by far
    (root / "v2" / META).write_text(json.dumps(meta))
    with open(root / "v2" / WEIGHTS, "r+b") as f:  # a copy cut short
        f.truncate(1000)
    with pytest.raises(ArtifactError, match="wrong size"):
        verify(root / "v2")
    (root / ".v3.partial").mkdir()  # an export in progress
    shutil.copytree(model_root / "v1", root / "v4")
    (root / "v4" / META).unlink()  # metadata not written yet
    assert newest_version(root) == root / "v2"
    assert newest_version(root, skip=lambda p: p.name == "v2") == root / "v1"
    weights = bytearray((model_root / "v1" / WEIGHTS).read_bytes())
    weights[-1] ^= 0xFF  # same size, one bit of a weight flipped
    (root / "v2" / WEIGHTS).write_bytes(bytes(weights))
    with pytest.raises(ArtifactError, match="checksum"):
        load_artifact(root / "v2")
    with pytest.raises(ArtifactError, match="no metadata.json"):
        read_metadata(root / "v4")
    with pytest.raises(ArtifactError, match="no complete model version"):
        load_artifact(root / "v4")


def test_int8_export_uses_torchrec_quantized_tables_and_reports_the_auc_change(small_run, model_root, small_data, tmp_path):
    result = check(cli("export", "--run", str(small_run), "--out", str(tmp_path), "--version", "q", "--quantize", "int8"))
    assert "AUC" in result.stdout
    quant = json.loads((tmp_path / "q" / META).read_text())["quantization"]
    assert quant["dtype"] == "int8" and quant["rows"] == 2_000  # the run's eval split
    ctr = quant["outputs"]["pctr"]
    assert abs(ctr["auc_change"]) < 0.01 and ctr["auc_int8"] == pytest.approx(ctr["auc_float"] + ctr["auc_change"])
    assert (tmp_path / "q" / WEIGHTS).stat().st_size < 0.75 * (model_root / "v1" / WEIGHTS).stat().st_size
    artifact = load_artifact(tmp_path / "q")
    assert isinstance(artifact.model.ebc, QuantEmbeddingBagCollection)

    # saving and loading loses nothing: the artifact scores as the model quantized in this process
    run_scorer = load_scorer(small_run)
    table = pq.read_table(small_data / "test").slice(0, 500)
    reference = run_scorer.score_table(table)
    run_scorer.model = quantize_embeddings_int8(run_scorer.model)
    in_process, loaded = run_scorer.score_table(table), load_scorer(tmp_path / "q").score_table(table)
    for name, values in loaded.items():
        np.testing.assert_array_equal(values, in_process[name], err_msg=name)
    difference = np.abs(loaded["pctr"] - reference["pctr"])
    assert 0 < difference.max() < 0.02  # quantized for real, and close


def test_export_overrides_only_the_ranking_formula(small_run, tmp_path):
    check(cli("export", "--run", str(small_run), "--out", str(tmp_path), "--version", "r", "ranking.exponents.pctcvr=2"))
    assert load_artifact(tmp_path / "r").config.ranking.exponents["pctcvr"] == 2.0
    bad = cli("export", "--run", str(small_run), "--out", str(tmp_path), "model.backbone=ple")
    assert bad.returncode == 2 and "ranking.*" in bad.stderr
    again = cli("export", "--run", str(small_run), "--out", str(tmp_path), "--version", "r")
    assert again.returncode == 2 and "already exists" in again.stderr
    missing = cli("export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path))
    assert missing.returncode == 2 and "not a training run directory" in missing.stderr


def test_an_exported_model_evaluates_like_its_run(small_run, model_root, small_data, tmp_path):
    for name, source in (("run", small_run), ("model", model_root)):
        check(cli("evaluate", "--run", str(source), "--data", str(small_data / "test"), "--out", str(tmp_path / name)))
    run, model = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("run", "model"))
    assert model["checkpoint"] == "v1" and model["rows"] == run["rows"]
    assert model["tasks"] == run["tasks"]
    no_out = cli("evaluate", "--run", str(model_root), "--data", str(small_data / "test"))
    assert no_out.returncode == 2 and "pass --out" in no_out.stderr
