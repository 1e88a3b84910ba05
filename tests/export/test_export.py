"""`recsys-mtl export`: artifact contents, safe and verified loading, int8 quantization, and that
an exported model scores exactly as the run it came from."""

from __future__ import annotations

import ast
import graphlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed.checkpoint as dcp
from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantEmbeddingBagCollection

from recsys_mtl.config import ConfigError, apply_overrides, config_to_dict, validate_config
from recsys_mtl.export import artifact as artifact_format
from recsys_mtl.export.artifact import (
    FORMAT,
    META,
    WEIGHTS,
    ArtifactError,
    check_model_path,
    newest_version,
    read_metadata,
    resolve_model_path,
    scan_versions,
    verify,
    version_order,
    write_artifact,
)
from recsys_mtl.export.export import ranking_config
from recsys_mtl.export.load import load_artifact, load_scorer
from recsys_mtl.export.quantize import quantize_embeddings_int8
from recsys_mtl.train.checkpoint import META as CHECKPOINT_META
from recsys_mtl.train.run_dir import load_run
from tests.export.tamper import (
    linked_file,
    linked_outside,
    malformed_metadata,
    one_nan,
    tampered_version,
    unlisted_weights,
)
from tests.train.conftest import check, cli, main_in_process


def test_export_of_a_two_rank_checkpoint_scores_like_the_run(small_run, model_root, small_data):
    meta = json.loads((model_root / "v1" / META).read_text())
    assert meta["format"] == FORMAT and meta["version"] == "v1"
    assert meta["source"]["world_size"] == 2 and meta["source"]["run"] == str(small_run.resolve())
    assert meta["tasks"] == ["click", "conversion", "watch_time"]
    assert meta["metrics"]["tasks"]["click"]["auc"] > 0.5
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


def test_a_root_orders_its_versions_by_name_and_reports_the_unusable_ones(model_root, tmp_path):
    assert sorted(["v10", "v9", "v20261125-101500", "v1a", "v1", "v20261125-093000"], key=version_order) == [
        "v1", "v1a", "v9", "v10", "v20261125-093000", "v20261125-101500"
    ]
    source, root = model_root / "v1", tmp_path / "root"
    root.mkdir()
    # "created" takes no part: a future date pins nothing, a number breaks nothing
    tampered_version(source, root / "v1", None, created="2999-01-01T00:00:00+00:00")
    tampered_version(source, root / "v2", None, created=12345)
    tampered_version(source, root / "v10", None)
    (root / ".v11.partial").mkdir()  # an export in progress
    shutil.copytree(source, root / "v12")
    (root / "v12" / META).unlink()  # metadata not written yet: not a version (yet)
    (root / "README").write_text("the demo's models\n")
    malformed_metadata(source, root / "v20")
    linked_outside(source, root / "v21")
    for name, change in (("v22", {"format": "recsys-mtl-model/1"}), ("v23", {"files": [WEIGHTS]}), ("v24", {"version": 7})):
        shutil.copytree(source, root / name)
        meta = json.loads((root / name / META).read_text())
        (root / name / META).write_text(json.dumps({**meta, **change}))
    shutil.copytree(source, root / "v25")
    (root / "v25" / META).unlink()
    (root / "v25" / META).symlink_to(source / META)
    scan = scan_versions(root)
    assert scan.versions == [root / "v10", root / "v2", root / "v1"]  # newest first
    reasons = {problem.path.name: problem.reason for problem in scan.problems}
    assert list(reasons) == ["v25", "v24", "v23", "v22", "v21", "v20"], reasons
    assert "metadata.json is a symbolic link" in reasons["v25"]
    assert "'version' is 7, not a name" in reasons["v24"]
    assert "'files' is list, not a mapping" in reasons["v23"]
    assert "model format 'recsys-mtl-model/1'" in reasons["v22"]
    assert f"a symbolic link (to {tmp_path}/root-outside/v21)" in reasons["v21"]
    assert "metadata.json is unreadable" in reasons["v20"]
    assert newest_version(root) == resolve_model_path(root) == root / "v10"
    with pytest.raises(ArtifactError, match="no metadata.json"):
        read_metadata(root / "v12")
    with pytest.raises(ArtifactError, match="no complete model version"):
        load_artifact(root / "v12")
    # serve starts on a root whose versions are all unusable (not ready, saying why), not on an empty one
    only_broken = tmp_path / "only_broken"
    only_broken.mkdir()
    malformed_metadata(source, only_broken / "v1")
    for path in (root, only_broken, root / "v1"):
        check_model_path(path)
    with pytest.raises(ArtifactError, match=r"no complete model version.*; v1: .*metadata\.json is unreadable"):
        resolve_model_path(only_broken)
    for path, message in ((root / "v12", "no complete model version"), (tmp_path / "nope", "does not exist")):
        with pytest.raises(ArtifactError, match=message):
            check_model_path(path)


def truncated(source, dest):
    """A copy cut short."""
    shutil.copytree(source, dest)
    with open(dest / WEIGHTS, "r+b") as f:
        f.truncate(1000)
    return dest


def flipped(source, dest):
    """The same size, one bit of a weight flipped."""
    shutil.copytree(source, dest)
    weights = bytearray((dest / WEIGHTS).read_bytes())
    weights[-1] ^= 0xFF
    (dest / WEIGHTS).write_bytes(bytes(weights))
    return dest


def extra_file(source, dest):
    shutil.copytree(source, dest)
    (dest / "notes.txt").write_text("not in the metadata\n")
    return dest


def extra_directory(source, dest):
    shutil.copytree(source, dest)
    (dest / "extra").mkdir()
    return dest


def listed_outside(source, dest):
    """Metadata listing a file of another directory, with its true checksum."""
    shutil.copytree(source, dest)
    meta = json.loads((dest / META).read_text())
    meta["files"][f"../{source.name}/{WEIGHTS}"] = meta["files"][WEIGHTS]
    (dest / META).write_text(json.dumps(meta))
    return dest


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (truncated, "model.safetensors is missing or has the wrong size"),
        (flipped, "model.safetensors does not match its checksum"),
        (unlisted_weights, "metadata.json lists no model.safetensors"),
        (extra_file, "notes.txt is not listed in metadata.json"),
        (extra_directory, "extra is not a regular file"),
        (linked_file, "config.yaml is a symbolic link"),
        (listed_outside, r"lists '\.\./v1/model\.safetensors', which is not a file of the version directory"),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_a_version_loads_only_if_its_metadata_lists_every_file_it_holds_as_it_is(model_root, tmp_path, damage, message):
    version = damage(model_root / "v1", tmp_path / "v2")
    for refuse in (verify, load_artifact):
        with pytest.raises(ArtifactError, match=message):
            refuse(version)


def test_the_artifact_format_sits_below_what_loads_and_serves_models():
    """``recsys_mtl.export``'s modules import each other without a cycle (imports inside functions
    count), and the format imports none of them."""
    package = Path(artifact_format.__file__).parent
    imports: dict[str, set[str]] = {}
    for file in package.glob("*.py"):
        names = imports.setdefault(file.stem, set())
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            names.update(m.split(".")[2] for m in modules if m.startswith("recsys_mtl.export."))
    assert imports["artifact"] == set()
    list(graphlib.TopologicalSorter(imports).static_order())  # CycleError on a circle


def test_int8_export_uses_torchrec_quantized_tables_and_reports_the_change_per_task(small_run, model_root, small_data, tmp_path):
    result = check(cli("export", "--run", str(small_run), "--out", str(tmp_path), "--version", "q", "--quantize", "int8"))
    assert "click" in result.stdout and "AUC" in result.stdout and "XAUC" in result.stdout
    quant = json.loads((tmp_path / "q" / META).read_text())["quantization"]
    assert quant["dtype"] == "int8" and quant["rows"] == 2_000  # the run's eval split
    # every task of the task list: AUC of <task> against its label for binary tasks, XAUC for the others
    assert {t: e["metric"] for t, e in quant["tasks"].items()} == {"click": "auc", "conversion": "auc", "watch_time": "xauc"}
    for task, entry in quant["tasks"].items():
        assert entry["rows"] == 2_000 and abs(entry["change"]) < 0.01, task
        assert entry["int8"] == pytest.approx(entry["float"] + entry["change"]), task
    assert list(quant["outputs"]) == load_scorer(model_root).outputs
    assert all(e["max_abs_diff"] >= e["mean_abs_diff"] >= 0 for e in quant["outputs"].values())
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
    difference = np.abs(loaded["click"] - reference["click"])
    assert 0 < difference.max() < 0.02  # quantized for real, and close


def test_export_overrides_only_the_ranking_formula(small_run, tmp_path):
    # export works in one process: each command runs in this one (main_in_process), 10 fresh imports of torch saved
    check(main_in_process("export", "--run", str(small_run), "--out", str(tmp_path), "--version", "r", "ranking.terms.conversion=2"))
    ranking = load_artifact(tmp_path / "r").config.ranking
    assert ranking.combine == "product" and ranking.terms == {"click": 1.0, "conversion": 2.0, "watch_time": 0.5}
    check(main_in_process(
        "export", "--run", str(small_run), "--out", str(tmp_path), "--version", "s",
        "ranking.combine=sum", "ranking.terms={click: 1, conversion_given_click: 0.25}",
    ))
    ranking = load_artifact(tmp_path / "s").config.ranking
    assert ranking.combine == "sum" and ranking.terms == {"click": 1.0, "conversion_given_click": 0.25}
    for override, name in (("ranking.terms.pctr=1", "'pctr'"), ("ranking.terms={click: 1, pctcvr: 0.5}", "'pctcvr'")):
        unknown = main_in_process("export", "--run", str(small_run), "--out", str(tmp_path), override)
        assert unknown.returncode == 2 and name in unknown.stderr, unknown.stderr
        assert "['click', 'conversion', 'conversion_given_click', 'watch_time']" in unknown.stderr, unknown.stderr
    legacy = main_in_process("export", "--run", str(small_run), "--out", str(tmp_path), "ranking.exponents.pctcvr=2")
    assert legacy.returncode == 2 and "ranking.terms" in legacy.stderr
    score = main_in_process("export", "--run", str(small_run), "--out", str(tmp_path), "ranking.terms.score=1")
    assert score.returncode == 2 and "ranking score itself" in score.stderr
    bad = main_in_process("export", "--run", str(small_run), "--out", str(tmp_path), "model.backbone=ple")
    assert bad.returncode == 2 and "ranking.*" in bad.stderr
    again = main_in_process("export", "--run", str(small_run), "--out", str(tmp_path), "--version", "r")
    assert again.returncode == 2 and "already exists" in again.stderr
    missing = main_in_process("export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path))
    assert missing.returncode == 2 and "not a training run directory" in missing.stderr


def test_one_term_override_keeps_the_default_terms(small_config):
    tasks = small_config.task_specs()
    default = validate_config(apply_overrides(config_to_dict(small_config), ["ranking.terms=null"]))
    assert default.ranking.terms is None and default.ranking_terms() == {"click": 1.0, "conversion": 1.0, "watch_time": 1.0}
    changed = ranking_config(default, tasks, ["ranking.terms.watch_time=0.25"], "<test>")
    assert changed.ranking.terms == {"click": 1.0, "conversion": 1.0, "watch_time": 0.25}
    summed = ranking_config(default, tasks, ["ranking.combine=sum"], "<test>")
    assert summed.ranking.combine == "sum" and summed.ranking_terms() == default.ranking_terms()
    with pytest.raises(ConfigError, match=r"\['like'\] not outputs of this model.*'conversion_given_click'"):
        ranking_config(default, tasks, ["ranking.terms.like=1"], "<test>")
    with pytest.raises(ConfigError, match="finite"):
        ranking_config(default, tasks, ["ranking.terms.click=.inf"], "<test>")


def test_an_exported_model_evaluates_like_its_run(small_run_report, model_root, small_data, tmp_path):
    # the run's report: `recsys-mtl evaluate --run small_run` on the same data (shared with tests/report)
    check(cli("evaluate", "--run", str(model_root), "--data", str(small_data / "test"), "--out", str(tmp_path / "model")))
    run, model = (json.loads((d / "metrics.json").read_text()) for d in (small_run_report, tmp_path / "model"))
    assert model["checkpoint"] == "v1" and model["rows"] == run["rows"]
    assert model["tasks"] == run["tasks"]
    no_out = main_in_process("evaluate", "--run", str(model_root), "--data", str(small_data / "test"))
    assert no_out.returncode == 2 and "pass --out" in no_out.stderr


def diverged_copy(run, dest, names: list[str]):
    """A copy of ``run`` whose latest checkpoint has NaN in tensors ``names`` of the model (and an
    infinity in the first): rewritten with DCP as training writes it, read back by ``load_unsharded``."""
    shutil.copytree(run, dest)
    loaded = load_run(dest)
    state = loaded.module.state_dict()
    with torch.no_grad():
        for name in names:
            state[f"model.{name}"].view(-1)[-1] = float("nan")
        state[f"model.{names[0]}"].view(-1)[0] = float("inf")
    rewritten = loaded.checkpoint.with_name(".rewritten")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*save in a single process", category=UserWarning)
        dcp.save({"model": state}, checkpoint_id=str(rewritten), no_dist=True)
    shutil.copy(loaded.checkpoint / CHECKPOINT_META, rewritten / CHECKPOINT_META)
    shutil.rmtree(loaded.checkpoint)
    rewritten.rename(loaded.checkpoint)
    return loaded.checkpoint


def test_export_refuses_a_checkpoint_with_non_finite_weights_and_writes_nothing(small_run, tmp_path):
    names = [
        "towers.click.head.bias", "ebc.embedding_bags.item_id.weight", "backbone.gates.weight",
        "dense_arch.0.weight", "towers.watch_time.mlp.0.weight", "backbone.experts.layers.1.bias", "ebc.embedding_bags.hour.weight",
    ]
    checkpoint = diverged_copy(small_run, tmp_path / "run", names)
    out = tmp_path / "models"
    out.mkdir()
    for extra in ([], ["--quantize", "int8"]):
        refused = main_in_process("export", "--run", str(tmp_path / "run"), "--out", str(out), "--version", "v1", *extra)
        assert refused.returncode == 2, refused.stderr[-3000:]
        message = refused.stderr.strip().splitlines()[-1]
        assert "error:" in message and "7 of 31 weight tensors hold NaN or infinite values" in message, message
        assert str(checkpoint) in message and "nothing exported" in message
        shown = [name for name in names if name in message]
        assert len(shown) == 5 and "(2 more)" in message, message  # the first few, by state order
        assert list(out.iterdir()) == []  # no version, no .partial left behind


def test_writing_an_artifact_with_non_finite_weights_or_failing_midway_leaves_nothing(model_root, tmp_path, monkeypatch):
    artifact = load_artifact(model_root / "v1")
    with torch.no_grad():
        artifact.model.towers["conversion"].head.bias.fill_(float("-inf"))
    with pytest.raises(ArtifactError, match=r"version v2: 1 of 31 weight tensors .*towers\.conversion\.head\.bias"):
        write_artifact(tmp_path, "v2", artifact.model, artifact.config, artifact.stats, {})
    assert list(tmp_path.iterdir()) == []
    # int8 embedding tables are integers: only the float tensors are checked
    quantized = quantize_embeddings_int8(load_artifact(model_root / "v1").model)
    write_artifact(tmp_path, "q", quantized, artifact.config, artifact.stats, {"quantization": {"dtype": "int8"}})
    assert load_artifact(tmp_path / "q").version == "q"
    # a write that fails midway (the disk fills up) removes its .partial directory

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifact_format, "save_config", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_artifact(tmp_path, "v3", quantized, artifact.config, artifact.stats, {})
    assert [p.name for p in tmp_path.iterdir()] == ["q"]


def test_a_version_with_non_finite_weights_passes_its_checksums_but_is_not_loaded(model_root, tmp_path):
    bad = tampered_version(model_root / "v1", tmp_path / "v2", one_nan("ebc.embedding_bags.item_id.weight"))
    assert verify(bad)["version"] == "v2"  # the checksums match: only the values give it away
    for load in (load_artifact, load_scorer):
        with pytest.raises(ArtifactError, match=r"1 of 31 weight tensors hold NaN .*\(ebc\.embedding_bags\.item_id\.weight\)"):
            load(bad)
    assert load_scorer(model_root / "v1").version == "v1"
