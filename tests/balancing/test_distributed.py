"""Every balancing strategy on the real sharded pipeline over 2 gloo ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.train.conftest import ROOT, check

STEPS = 6
SMALL = ["data.batch_size=256", "model.hidden_dims=[32,16]", "model.tower_dims=[16]", "train.balancing.dwa_window_steps=2",
         "train.balancing.dst_min_prob=0.3", "train.balancing.dst_window_steps=2"]


def test_each_strategy_updates_embeddings_once_per_step_and_ranks_agree(small_config_path, tmp_path):
    out = tmp_path / "ranks.json"
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env["OMP_NUM_THREADS"] = "1"
    check(subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(ROOT / "tests" / "balancing" / "distributed_worker.py"), str(small_config_path), str(out), str(STEPS), *SMALL],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    ))
    rank0, rank1 = json.loads(out.read_text())
    for strategy, mine in rank0.items():
        theirs = rank1[strategy]
        for rank in (mine, theirs):
            assert rank["kernels"] >= 1
            # the per-task gradient passes never reach the embedding kernels: one backward (and so
            # one fused update) per kernel per step
            assert rank["embedding_backwards"] == STEPS * rank["kernels"], (strategy, rank["embedding_backwards"])
            assert all(rank["tables_moved"]), strategy
        # bit-identical weights and balancer state on both ranks
        assert mine["weights"] == theirs["weights"], strategy
        assert mine["state"] == theirs["state"], strategy
        reported = [r for r in mine["reports"] if "task_grad_cosine" in r]
        assert len(reported) == STEPS // 2 and all(set(r["task_grad_norm"]) == {"click", "conversion", "watch_time"} for r in reported)
        assert mine["reports"] == theirs["reports"], strategy  # the diagnostics are global numbers too
        if strategy in ("uncertainty", "gradnorm", "dwa"):
            assert mine["weights"] != mine["initial_weights"], f"{strategy} never moved its weights"
        elif strategy == "dst":  # this step's kept tasks have their weight, the dropped ones 0
            assert all(w in (0.0, w0) for w, w0 in zip(mine["weights"], mine["initial_weights"], strict=True))
        else:
            assert mine["weights"] == mine["initial_weights"], strategy
    assert any(r.get("pcgrad_conflicts", 0) >= 0 for r in rank0["pcgrad"]["reports"])
    assert all("gradnorm_grad_norm" in r for r in rank0["gradnorm"]["reports"])
    # the masks drawn (identical on both ranks: the reports are compared above) did drop tasks
    kept = [r["dst_kept"] for r in rank0["dst"]["reports"]]
    assert len(kept) == STEPS and any(0.0 in k.values() for k in kept), kept
    assert all(set(r["cagrad_coefficients"]) == {"click", "conversion", "watch_time"} for r in rank0["cagrad"]["reports"])
    assert all("gradvac_coefficients" in r for r in rank0["gradvac"]["reports"])
    assert any(s > 0 for s in rank0["metabalance"]["state"]["norm_averages"][1])
