"""`recsys-mtl pipeline` end to end on the small dataset: it publishes once however often it runs,
its gate refuses a worse model, and a failed stage costs nothing that was already done."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from recsys_mtl.pipeline.config import load_pipeline_config
from recsys_mtl.pipeline.runner import STAGES
from tests.conftest import SMALL_MODEL
from tests.train.conftest import ROOT, cli


def write_config(path: Path, small_config_path: Path, model_root: Path, **extra) -> Path:
    config = {
        "work_dir": str(path.parent / "work"),
        "training": {"config": str(small_config_path), "nproc": 1, "overrides": [*SMALL_MODEL, "train.log_every_steps=10"]},
        "gate": {"rules": [
            {"task": "click", "metric": "auc", "max_drop": 0.002},
            {"task": "click", "metric": "calibration", "min": 0.05, "max": 20.0},
        ]},
        "publish": {"model_root": str(model_root)},
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def pipeline(config: Path, run_id: str, *args: str):
    return cli("pipeline", "--config", str(config), "--run-id", run_id, *args)


def manifests(work: Path, run_id: str) -> dict[str, dict]:
    return {
        stage: json.loads((work / run_id / stage / "manifest.json").read_text())
        for stage in STAGES if (work / run_id / stage / "manifest.json").is_file()
    }


def versions(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


@pytest.fixture(scope="module")
def published(small_config_path, tmp_path_factory):
    """A first pipeline run (run id "a") that published a model."""
    base = tmp_path_factory.mktemp("pipeline")
    config = write_config(base / "pipeline.yaml", small_config_path, base / "models")
    result = pipeline(config, "a")
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return config, base


def test_running_the_pipeline_twice_publishes_once(published):
    config, base = published
    first = manifests(base / "work", "a")
    assert set(first) == set(STAGES) - {"generate"}
    assert versions(base / "models") == [first["export"]["outputs"]["version"]]
    assert first["gate"]["outputs"]["passed"] and first["gate"]["outputs"]["published"] is None

    again = pipeline(config, "a")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already published" in again.stdout
    assert all(f"stage {stage}: done before" in again.stderr for stage in first)
    assert manifests(base / "work", "a") == first  # nothing re-ran
    assert versions(base / "models") == [first["export"]["outputs"]["version"]]


def test_the_gate_refuses_a_worse_model_and_says_why(published):
    config, base = published
    before = versions(base / "models")
    worse = pipeline(config, "b", f"training.overrides={json.dumps([*SMALL_MODEL, 'train.max_steps=2'])}")
    assert worse.returncode == 3, worse.stdout + worse.stderr[-3000:]
    assert "the gate refused the new model, nothing was published" in worse.stdout
    assert f"below the published {before[0]}" in worse.stdout and "more than the 0.002 allowed" in worse.stdout
    decision = json.loads((base / "work" / "b" / "gate" / "decision.json").read_text())
    assert decision["passed"] is False and decision["published"] == before[0]
    assert not (base / "work" / "b" / "export").exists()
    assert versions(base / "models") == before


def test_training_can_start_from_what_is_published(published):
    config, base = published
    current = base / "models" / versions(base / "models")[-1]
    result = pipeline(config, "c", "training.init_from=published", f"training.overrides={json.dumps([*SMALL_MODEL, 'train.max_steps=2'])}")
    assert result.returncode in (0, 3), result.stdout + result.stderr[-3000:]  # the gate decides; training started warm
    train = manifests(base / "work", "c")["train"]
    assert train["inputs"]["init_from"] == str(current)
    log = (base / "work" / "c" / "train" / "log.txt").read_text()
    assert f"warm start from {current}/metadata.json" in log
    summary = json.loads((base / "work" / "c" / "train" / "run" / "warm_start.json").read_text())
    assert summary["resized"] == {} and all(k.startswith("balancer.") for k in summary["new"])  # a version holds the model only


ADAPT = "adapt={kind: lora, rank: 4, layers: [backbone, dense_arch], domain_feature: device}"


def test_an_adaptation_stage_trains_adapters_on_what_is_published(published, small_config_path, tmp_path):
    _, base = published
    root = shutil.copytree(base / "models", tmp_path / "models")  # this run publishes: the module's root stays as it is
    current = root / versions(root)[-1]
    lenient = {"rules": [{"task": "click", "metric": "auc", "max_drop": 1.0}]}  # 2 steps: publish whatever they give
    config = write_config(tmp_path / "pipeline.yaml", small_config_path, root, gate=lenient)
    result = pipeline(config, "d", "training.init_from=published", f"training.overrides={json.dumps([*SMALL_MODEL, 'train.max_steps=2', ADAPT])}")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    done = manifests(tmp_path / "work", "d")
    assert done["train"]["inputs"]["init_from"] == str(current)
    assert done["train"]["inputs"]["config"]["adapt"]["domain_feature"] == "device"
    assert f"warm start from {current}/metadata.json" in (tmp_path / "work" / "d" / "train" / "log.txt").read_text()
    assert done["gate"]["outputs"]["published"] == current.name  # gated against the model it adapts
    metadata = json.loads((root / done["export"]["outputs"]["version"] / "metadata.json").read_text())
    assert metadata["adapters"]["merged"] is False and metadata["adapters"]["domain_feature"] == "device"  # base + adapters
    assert versions(root) == sorted([current.name, done["export"]["outputs"]["version"]])


def test_an_adaptation_stage_with_nothing_published_exits_2_naming_init_from(small_config_path, tmp_path):
    config = write_config(tmp_path / "pipeline.yaml", small_config_path, tmp_path / "models")
    result = pipeline(config, "e", "training.init_from=published", f"training.overrides={json.dumps([*SMALL_MODEL, ADAPT])}")
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    assert "adapt: section trains adapters on a trained model, and training.init_from=published gives none" in result.stderr
    assert "train" not in manifests(tmp_path / "work", "e")


def test_a_failed_stage_keeps_earlier_outputs_and_a_rerun_resumes_after_them(small_config_path, tmp_path):
    config = write_config(tmp_path / "pipeline.yaml", small_config_path, tmp_path / "models")
    failed = pipeline(config, "c", f"evaluate.data={tmp_path / 'missing'}")
    assert failed.returncode == 1
    assert "stage evaluate failed" in failed.stdout and "completed stages are skipped" in failed.stdout
    done = manifests(tmp_path / "work", "c")
    assert set(done) == {"validate", "train"}
    assert (Path(done["train"]["outputs"]["run"]) / "checkpoints" / "LATEST").is_file()

    fixed = pipeline(config, "c")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    after = manifests(tmp_path / "work", "c")
    assert after["train"] == done["train"] and "stage train: done before" in fixed.stderr
    assert len(versions(tmp_path / "models")) == 1

    forced = pipeline(config, "c", "--force", "gate")  # decide again: a new export, published beside
    assert forced.returncode == 0, forced.stderr[-3000:]
    redone = manifests(tmp_path / "work", "c")
    assert redone["train"] == after["train"] and redone["evaluate"] == after["evaluate"]
    assert all(redone[s]["id"] != after[s]["id"] for s in ("gate", "export", "publish"))
    assert redone["gate"]["outputs"]["published"] == after["export"]["outputs"]["version"]
    assert len(versions(tmp_path / "models")) == 2


def test_pipeline_configs_are_validated_with_named_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("work_dir: w\npublish: {model_root: m}\ntraining: {config: c.yaml, nprocs: 2}\n")
    result = cli("pipeline", "--config", str(bad))
    assert result.returncode == 2 and "training.nprocs: unknown key" in result.stderr
    loaded = load_pipeline_config(ROOT / "pipelines" / "configs" / "demo.yaml")
    assert loaded.publish.model_root == str((ROOT / "demo" / "models").resolve())


def test_the_cluster_pipeline_config_is_the_one_kustomize_mounts():
    shipped = yaml.safe_load((ROOT / "pipelines" / "configs" / "cluster.yaml").read_text())
    mounted = yaml.safe_load((ROOT / "deploy" / "base" / "pipeline.yaml").read_text())
    assert shipped == mounted
    assert load_pipeline_config(ROOT / "pipelines" / "configs" / "cluster.yaml").publish.model_root == "/data/models"


def test_the_daily_pipeline_config_takes_the_day_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths given as overrides are relative to the working directory
    loaded = load_pipeline_config(
        ROOT / "pipelines" / "configs" / "daily.yaml", ["training.config=d/day_2/config.yaml", "evaluate.data=d/day_3/test"],
    )
    assert loaded.training.init_from == "published"
    assert (loaded.training.config, loaded.evaluate.data) == (str(tmp_path.resolve() / "d/day_2/config.yaml"), str(tmp_path.resolve() / "d/day_3/test"))
    assert loaded.publish.model_root == str((ROOT / "demo" / "daily" / "models").resolve())
