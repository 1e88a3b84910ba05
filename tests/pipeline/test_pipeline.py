"""`recsys-mtl pipeline` end to end on the small dataset: it publishes once however often it runs,
its gate refuses a worse model, and a failed stage costs nothing that was already done."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from recsys_mtl.pipeline.config import load_pipeline_config
from recsys_mtl.pipeline.runner import STAGES
from tests.conftest import SMALL_MODEL
from tests.train.conftest import ROOT, main_in_process


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
    """``recsys-mtl pipeline`` in this process (``main_in_process``): the command itself only reads configs and
    manifests; every stage it runs is a ``recsys-mtl`` child process, as always."""
    return main_in_process("pipeline", "--config", str(config), "--run-id", run_id, *args)


def start(config: Path, run_id: str, log: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """``python -m recsys_mtl pipeline`` in the background, as ``cli`` would run it; its stdout and stderr go to
    files beside ``log`` (pipes could fill while another run is waited for). ``finish`` gives its result."""
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}
    argv = [sys.executable, "-m", "recsys_mtl", "pipeline", "--config", str(config), "--run-id", run_id, *args]
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        return subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=env, cwd=ROOT, start_new_session=True), log


def finish(started: tuple[subprocess.Popen, Path], timeout: int = 600) -> subprocess.CompletedProcess:
    proc, log = started
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass  # its result says so: killed
    finally:
        if proc.poll() is None:  # timed out, or the test stopped: the run and the stage it runs go
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    code = proc.returncode
    return subprocess.CompletedProcess(proc.args, code, log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text())


def manifests(work: Path, run_id: str) -> dict[str, dict]:
    return {
        stage: json.loads((work / run_id / stage / "manifest.json").read_text())
        for stage in STAGES if (work / run_id / stage / "manifest.json").is_file()
    }


def versions(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


@dataclass
class Published:
    config: Path
    base: Path  # work/ and models/ of this module's pipeline
    failed: subprocess.CompletedProcess  # the first attempt of run "a", its evaluation data missing
    done: dict[str, dict]  # the manifests as that attempt left them
    checkpoint_kept: bool  # train's LATEST checkpoint after that attempt
    fixed: subprocess.CompletedProcess  # the same command without the fault
    after: dict[str, dict]  # the manifests as the fixed attempt left them
    versions: list[str]  # the model root as the fixed attempt left it


@pytest.fixture(scope="module")
def published(small_config_path, tmp_path_factory) -> Published:
    """Run id "a" in a fresh root, as an operator lives it: its evaluate stage fails (the data is missing) after
    validate and train, then the same command without the fault resumes after train and publishes a model.
    Each attempt's result and what it left are kept for test_a_failed_stage_keeps_earlier_outputs...; the
    published root is what the other tests gate against, start from, or copy."""
    base = tmp_path_factory.mktemp("pipeline")
    config = write_config(base / "pipeline.yaml", small_config_path, base / "models")
    failed = pipeline(config, "a", f"evaluate.data={base / 'missing'}")
    done = manifests(base / "work", "a")
    kept = "train" in done and (Path(done["train"]["outputs"]["run"]) / "checkpoints" / "LATEST").is_file()
    fixed = pipeline(config, "a")
    assert fixed.returncode == 0, f"first attempt: exit {failed.returncode}\n{failed.stdout}\n{fixed.stdout}{fixed.stderr[-4000:]}"
    return Published(config, base, failed, done, kept, fixed, manifests(base / "work", "a"), versions(base / "models"))


def test_running_the_pipeline_twice_publishes_once(published):
    config, base = published.config, published.base
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


ADAPT = "adapt={kind: lora, rank: 4, layers: [backbone, dense_arch], domain_feature: device}"
TWO_STEPS = [*SMALL_MODEL, "train.max_steps=2"]


@dataclass
class Started:
    result: subprocess.CompletedProcess
    work: Path  # the pipeline's work_dir
    root: Path  # its model root
    before: list[str]  # the versions in that root when the run started

    @property
    def current(self) -> Path:  # the version published then
        return self.root / self.before[-1]


@pytest.fixture(scope="module")
def from_published(published, small_config_path, tmp_path_factory) -> dict[str, Started]:
    """The module's runs that start from what ``published`` published, all at the same time (each is a chain
    of child processes, mostly single-threaded start-up, so two cores overlap them): "b", a worse model (2 steps
    from scratch) gated against the module's root, which it leaves as it is; "c", 2 steps warm-started from the
    published version; "d", an adaptation stage on it, gated leniently (2 steps: publish whatever they give).
    "c" and "d" may publish, each into its own copy of the root. "b" and "c" run in background processes,
    "d" in this one meanwhile."""
    base, here = published.base, tmp_path_factory.mktemp("from_published")
    roots, configs = {"b": base / "models"}, {"b": published.config}
    lenient = {"rules": [{"task": "click", "metric": "auc", "max_drop": 1.0}]}
    for name, extra in (("c", {}), ("d", {"gate": lenient})):
        roots[name] = shutil.copytree(base / "models", here / name / "models")
        configs[name] = write_config(here / name / "pipeline.yaml", small_config_path, roots[name], **extra)
    before = {name: versions(root) for name, root in roots.items()}
    args = {
        "b": [f"training.overrides={json.dumps(TWO_STEPS)}"],
        "c": ["training.init_from=published", f"training.overrides={json.dumps(TWO_STEPS)}"],
        "d": ["training.init_from=published", f"training.overrides={json.dumps([*TWO_STEPS, ADAPT])}"],
    }
    background = {name: start(configs[name], name, here / f"{name}.log", *args[name]) for name in ("b", "c")}
    results = {}
    try:
        results["d"] = pipeline(configs["d"], "d", *args["d"])
    finally:  # every background run is waited for (or ended) before the fixture returns or raises
        for name, started in background.items():
            results[name] = finish(started)
    return {name: Started(results[name], configs[name].parent / "work", roots[name], before[name]) for name in args}


def test_the_gate_refuses_a_worse_model_and_says_why(from_published):
    b = from_published["b"]
    worse, work, before = b.result, b.work, b.before
    assert worse.returncode == 3, worse.stdout + worse.stderr[-3000:]
    assert "the gate refused the new model, nothing was published" in worse.stdout
    assert f"below the published {before[0]}" in worse.stdout and "more than the 0.002 allowed" in worse.stdout
    decision = json.loads((work / "b" / "gate" / "decision.json").read_text())
    assert decision["passed"] is False and decision["published"] == before[0]
    assert not (work / "b" / "export").exists()
    assert versions(b.root) == before


def test_training_can_start_from_what_is_published(from_published):
    c = from_published["c"]
    result, work, current = c.result, c.work, c.current
    assert result.returncode in (0, 3), result.stdout + result.stderr[-3000:]  # the gate decides; training started warm
    train = manifests(work, "c")["train"]
    assert train["inputs"]["init_from"] == str(current)
    log = (work / "c" / "train" / "log.txt").read_text()
    assert f"warm start from {current}/metadata.json" in log
    summary = json.loads((work / "c" / "train" / "run" / "warm_start.json").read_text())
    assert summary["resized"] == {} and all(k.startswith("balancer.") for k in summary["new"])  # a version holds the model only


def test_an_adaptation_stage_trains_adapters_on_what_is_published(from_published):
    d = from_published["d"]
    result, work, root, current = d.result, d.work, d.root, d.current
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    done = manifests(work, "d")
    assert done["train"]["inputs"]["init_from"] == str(current)
    assert done["train"]["inputs"]["config"]["adapt"]["domain_feature"] == "device"
    assert f"warm start from {current}/metadata.json" in (work / "d" / "train" / "log.txt").read_text()
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


def test_a_failed_stage_keeps_earlier_outputs_and_a_rerun_resumes_after_them(published, small_config_path, tmp_path):
    failed, done = published.failed, published.done
    assert failed.returncode == 1, failed.stdout + failed.stderr[-3000:]
    assert "stage evaluate failed" in failed.stdout and "completed stages are skipped" in failed.stdout
    assert set(done) == {"validate", "train"}
    assert published.checkpoint_kept

    fixed, after = published.fixed, published.after
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert after["train"] == done["train"] and "stage train: done before" in fixed.stderr
    assert len(published.versions) == 1

    # decide again: a new export, published beside. On a copy of run "a" and of the root as the fixed attempt
    # left them (the module's root stays as it is); the copied manifests still name the module's train run
    # and report, which the forced stages read
    shutil.copytree(published.base / "work" / "a", tmp_path / "work" / "a")
    for version in published.versions:
        shutil.copytree(published.base / "models" / version, tmp_path / "models" / version)
    config = write_config(tmp_path / "pipeline.yaml", small_config_path, tmp_path / "models")
    forced = pipeline(config, "a", "--force", "gate")
    assert forced.returncode == 0, forced.stderr[-3000:]
    redone = manifests(tmp_path / "work", "a")
    assert redone["train"] == after["train"] and redone["evaluate"] == after["evaluate"]
    assert all(redone[s]["id"] != after[s]["id"] for s in ("gate", "export", "publish"))
    assert redone["gate"]["outputs"]["published"] == after["export"]["outputs"]["version"]
    assert len(versions(tmp_path / "models")) == 2


def test_pipeline_configs_are_validated_with_named_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("work_dir: w\npublish: {model_root: m}\ntraining: {config: c.yaml, nprocs: 2}\n")
    result = main_in_process("pipeline", "--config", str(bad))
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
