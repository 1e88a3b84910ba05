"""Training as a user runs it: real processes, gloo, 1 and 2 ranks, checkpoints and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recsys_mtl.train.checkpoint import complete_checkpoints, latest_checkpoint
from recsys_mtl.train.run_dir import load_run
from tests.train.conftest import (
    ROOT,
    check,
    cli,
    cli_batch,
    config_with,
    evaluate_unsharded,
    main_in_process,
    train_log,
    weights,
)

SMALL = ["data.batch_size=512", "train.log_every_steps=2", "model.hidden_dims=[32,16]", "model.tower_dims=[16]"]


def test_two_gloo_ranks_shard_tables_lower_the_loss_and_finish_on_uneven_data(small_config_path, tmp_path):
    # 18,000 train rows on 2 ranks in batches of 512: 9,000 rows per rank is not a multiple of 512
    run = tmp_path / "run"
    result = check(cli(
        "train", "--config", str(small_config_path), "--out", str(run), "--nproc", "2", *SMALL, "train.epochs=2",
        "train.sharding.item_id=column_wise",
    ))
    plan = json.loads((run / "plan.json").read_text())
    assert {r for table in plan for r in table["ranks"]} == {0, 1}, plan
    assert {t["table"]: t["sharding"] for t in plan}["item_id"] == "column_wise"  # pinned in config
    assert all(table["kernel"] == "fused" for table in plan)
    logs = train_log(run)
    assert logs[-1]["step"] == 2 * 18 and logs[0]["samples_per_s"] > 0
    for task in ("click", "conversion", "watch_time"):
        assert logs[-1]["loss"][task] < logs[0]["loss"][task], (task, logs[0]["loss"], logs[-1]["loss"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train_data_quality"]["rows_read"] == 2 * 18_000
    # no AUC bar: 36 steps of a tiny model leave click ranking at chance (0.40-0.57 over train.seed 0-3);
    # that the loss falls and the unsharded model reproduces the metrics below is what this run shows
    assert "oracle_auc" in metrics["metrics"]["click"] and "conditional_auc" in metrics["metrics"]["conversion"]
    assert "click" in result.stdout and "oracle" in result.stdout
    assert latest_checkpoint(run / "checkpoints").name == "step_00000036"

    # the sharded model's own evaluation is reproduced by the same weights unsharded in one process:
    # nothing in the model depends on the sharding plan (e.g. the order of features the sharded
    # embedding collection returns)
    again = evaluate_unsharded(run)
    for task, values in metrics["metrics"].items():
        for name, value in values.items():
            assert again[task][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (task, name)


def test_a_killed_run_resumed_ends_with_the_weights_of_an_uninterrupted_one(small_config_path, tmp_path):
    args = [
        "--config", str(small_config_path), *SMALL, "data.batch_size=128", "train.epochs=2",
        "train.checkpoint_every_steps=10", "train.keep_checkpoints=2", "model.dropout=0.1", "train.eval_every_steps=0",
    ]
    straight = tmp_path / "straight"
    check(cli("train", "--out", str(straight), *args))

    killed = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys_mtl", "train", "--out", str(killed), *args],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 300
    while latest_checkpoint(killed / "checkpoints") is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    assert complete_checkpoints(killed / "checkpoints")

    check(cli("train", "--out", str(killed), "--resume", *args))
    config = config_with(small_config_path, *SMALL, "data.batch_size=128", "model.dropout=0.1")
    a, b = weights(straight / "checkpoints", config), weights(killed / "checkpoints", config)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    assert json.loads((killed / "metrics.json").read_text())["steps"] == 2 * 141


def test_resume_without_flag_is_refused_and_resume_of_a_finished_run_only_reports(small_config_path, tmp_path):
    run = tmp_path / "run"
    args = ["--config", str(small_config_path), "--out", str(run), *SMALL, "train.max_steps=3"]
    first = check(cli("train", *args))
    assert "Arguments: {" not in first.stderr and "planner" not in first.stderr  # fbgemm / torchrec INFO chatter
    assert "INFO recsys_mtl.train.checkpoint: checkpoint" in first.stderr  # the project's own INFO lines stay
    # the refusals stop before anything starts: they run in this process (main_in_process)
    again = main_in_process("train", *args)
    assert again.returncode == 2 and "pass --resume" in again.stderr
    resumed = check(cli("train", *args, "--resume"))
    assert "3 steps on 1 rank(s)" in resumed.stdout
    # a changed architecture is refused before anything is written: the run stays exportable
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    changed = main_in_process("train", "--resume", *args, "model.hidden_dims=[16,8]", "features.sparse.user_id.dim=8", "train.dense_lr=1e-4")
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert "the config differs from the one its checkpoint step_00000003 was trained with, in " in changed.stderr
    assert "features.sparse[user_id].dim, model.hidden_dims. A resume continues" in changed.stderr  # not the LR
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files
    load_run(run)


def _reshard(config: Path, checkpoint: Path, out: Path, nproc: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    check(subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
         str(ROOT / "tests" / "train" / "sharded_worker.py"), "reshard", str(config), str(checkpoint), str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    ))


def test_checkpoints_reshard_from_two_ranks_to_one_and_back(small_run, tmp_path):
    run = small_run  # trained on 2 ranks (sharded tables); only read here
    config = run / "config.yaml"
    two = latest_checkpoint(run / "checkpoints")

    _reshard(config, two, tmp_path / "one", nproc=1)
    _reshard(config, latest_checkpoint(tmp_path / "one"), tmp_path / "two_again", nproc=2)

    resolved = config_with(config)
    original = weights(run / "checkpoints", resolved)
    for root in ("one", "two_again"):
        copy = weights(tmp_path / root, resolved)
        for name in original:
            torch.testing.assert_close(copy[name], original[name], rtol=0, atol=0, msg=f"{root}: {name}")


SHIPPED = sorted(p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*.yaml"))


@pytest.fixture(scope="module")
def shipped_runs(small_data, tmp_path_factory) -> dict[Path, tuple[Path, subprocess.CompletedProcess]]:
    """Every shipped config trained 3 steps on the small data, each command as a user types it, all in one
    fresh process (``cli_batch``: torch is imported once, not once a config): its run directory and result."""
    root = tmp_path_factory.mktemp("shipped")
    data = [f"data.train={small_data / 'train'}", f"data.eval={small_data / 'test'}"]
    small = [*SMALL, "model.hidden_dims=[16,16]"]  # equal widths: every backbone takes them (sluice needs them)
    runs = {config_file: root / str(i) / "run" for i, config_file in enumerate(SHIPPED)}
    results = cli_batch(*(
        ["train", "--config", str(ROOT / config_file), "--out", str(run), *data, *small, "train.max_steps=3"]
        for config_file, run in runs.items()
    ))
    return {config_file: (run, result) for (config_file, run), result in zip(runs.items(), results, strict=True)}


@pytest.mark.parametrize("config_file", SHIPPED, ids=str)
def test_shipped_configs_train_a_few_steps(shipped_runs, config_file):
    run, result = shipped_runs[config_file]
    check(result)
    assert "3 steps on 1 rank(s)" in result.stdout
    assert (run / "metrics.json").is_file()


# large id embeddings learning fast on one train file (6,000 rows, 12 steps of 512 an epoch): the eval AUC
# peaks after an epoch or two and falls as the model memorises its users and items
OVERFIT = [
    *SMALL, "train.epochs=8", "train.embedding_lr=0.5", "train.dense_lr=0.02", "train.warmup_steps=0",
    "features.sparse.user_id.dim=64", "features.sparse.item_id.dim=64", "model.interaction=none",
    "train.log_every_steps=1000", "train.keep_checkpoints=1", "train.select={metric: click.auc, patience: 2}",
]


def test_model_selection_stops_a_run_made_to_overfit_at_its_best_evaluation(small_data, tmp_path):
    run = tmp_path / "run"
    args = [
        "--config", str(small_data / "config.yaml"), "--out", str(run),
        f"data.train={sorted((small_data / 'train').glob('*.parquet'))[0]}", *OVERFIT,
    ]
    # stopped after 3 epochs and resumed: the best and the evaluations since it carry over
    check(cli("train", *args, "train.max_steps=36"))
    resumed = check(cli("train", *args, "--resume"))

    evals = [(r["step"], r["metrics"]["click"]["auc"]) for r in train_log(run, "eval")]
    best_step, best_auc = max(evals, key=lambda e: e[1])
    (stop,) = train_log(run, "early_stop")
    assert stop["step"] == evals[-1][0] < 8 * 12 and stop["best_step"] == best_step, (evals, stop)
    assert [step for step, _ in evals if step > best_step] == [s for s, _ in evals][-2:]  # patience: 2 evaluations
    checkpoints = run / "checkpoints"
    best = checkpoints / (checkpoints / "BEST").read_text().strip()
    assert best.name == f"step_{best_step:08d}"
    # keep_checkpoints=1 keeps the latest, and the best besides
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted({"BEST", "LATEST", best.name, f"step_{stop['step']:08d}"})
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["selected"] == {
        "metric": "click.auc", "mode": "max", "value": best_auc, "step": best_step, "checkpoint": best.name,
        "early_stop": True, "last_step": stop["step"],
    }
    assert metrics["metrics"]["click"]["auc"] == best_auc and metrics["steps"] == stop["step"]
    assert f"best click.auc {best_auc:.4f} at step {best_step}: {best.name}, stopped early" in resumed.stdout

    loaded = load_run(run, "best")
    assert loaded.checkpoint == best and loaded.meta["best"] == {"metric": "click.auc", "mode": "max", "value": best_auc, "step": best_step}
    assert evaluate_unsharded(run, best)["click"]["auc"] == pytest.approx(best_auc, rel=1e-5)

    exported = check(main_in_process("export", "--run", str(run), "--out", str(tmp_path / "models"), "--version", "v1", "--checkpoint", "best"))
    assert f"{best.name} (written by 1 rank(s), best click.auc {best_auc:.4f})" in exported.stdout
    source = json.loads((tmp_path / "models" / "v1" / "metadata.json").read_text())["source"]
    assert source["checkpoint"] == best.name and source["best"]["value"] == best_auc
