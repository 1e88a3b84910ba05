"""The Kubernetes training job's command line, run as a real 2-node job on this machine: two torchrun
agents (the Master and the Worker pod) on localhost meeting through a c10d rendezvous, 2 gloo ranks
each, one shared run directory (the pods' shared volume)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys_mtl.train.checkpoint import latest_checkpoint
from tests.train.conftest import ROOT, evaluate_unsharded, train_log

TRAIN_JOB = ROOT / "deploy" / "base" / "train-job.yaml"
NODES, PER_NODE = 2, 2
SMALL = ["data.batch_size=512", "model.hidden_dims=[32,16]", "model.tower_dims=[16]", "train.log_every_steps=2", "train.max_steps=4"]


def pod_command(replica: str) -> list[str]:
    """The training container's command and args in the PyTorchJob's ``replica`` spec."""
    job = yaml.safe_load(TRAIN_JOB.read_text())
    container = job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"][0]
    return [*container["command"], *container["args"]]


def local_command(argv: list[str], config: Path, run: Path) -> list[str]:
    """The pod's command for this machine: this interpreter's torchrun, 2 ranks a node instead of the
    pod's 4 CPUs' worth, the test's config and run directory instead of the volume's."""
    assert argv[0] == "torchrun", argv
    swap = {"--nproc-per-node=4": f"--nproc-per-node={PER_NODE}", "/data/config.yaml": str(config), "/data/runs/latest": str(run)}
    assert set(swap) <= set(argv), f"the job's command line changed: {argv}"
    return [sys.executable, "-m", "torch.distributed.run", *(swap.get(a, a) for a in argv[1:])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_pytorchjob_command_trains_on_two_nodes_of_two_ranks(small_config_path, tmp_path):
    run = tmp_path / "runs" / "latest"
    # the operator gives every pod the rendezvous through torchrun's PET_* environment (the command line
    # names none): here a c10d rendezvous both agents reach on localhost
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}
    env.update(PET_RDZV_BACKEND="c10d", PET_RDZV_ENDPOINT=f"localhost:{free_port()}", PET_RDZV_ID="recsys-mtl-train", OMP_NUM_THREADS="1")
    nodes = [
        subprocess.Popen(
            [*local_command(pod_command(replica), small_config_path, run), *SMALL],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for replica in ("Master", "Worker")
    ]
    outputs = []
    try:
        for node in nodes:
            out, err = node.communicate(timeout=240)
            outputs.append((node.returncode, out, err))
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for code, out, err in outputs:
        assert code == 0, f"exit {code}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-6000:]}"

    # each agent started 2 ranks: global ranks 2g, 2g+1 with local ranks 0, 1 for its node's group rank g
    seen = []
    for _, _, err in outputs:
        ranks = sorted((int(r), int(w), int(lr)) for r, w, lr in re.findall(r"rank (\d+)/(\d+) \(local rank (\d+)\)", err))
        assert len(ranks) == PER_NODE and {w for _, w, _ in ranks} == {NODES * PER_NODE}, err[-3000:]
        group = ranks[0][0] // PER_NODE
        assert [(r, lr) for r, _, lr in ranks] == [(group * PER_NODE + i, i) for i in range(PER_NODE)], ranks
        seen += [r for r, _, _ in ranks]
    assert sorted(seen) == list(range(NODES * PER_NODE))
    # rank 0 (on whichever node the rendezvous made the first) printed the result
    assert sum("4 steps on 4 rank(s)" in out for _, out, _ in outputs) == 1

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 4 and metrics["steps"] == 4
    assert 4 * 4 * 512 <= metrics["train_data_quality"]["rows_read"] <= 18_000  # summed over the 4 ranks
    logs = train_log(run)
    assert logs and all(all(v == v and abs(v) < float("inf") for v in r["loss"].values()) for r in logs)
    plan = json.loads((run / "plan.json").read_text())
    assert {r for table in plan for r in table["ranks"]} == set(range(4)), plan  # tables on both nodes' ranks
    checkpoint = latest_checkpoint(run / "checkpoints")
    assert checkpoint is not None and checkpoint.name == "step_00000004"
    assert sorted(p.name for p in checkpoint.glob("*.distcp")) == [f"__{r}_0.distcp" for r in range(4)]
    assert json.loads((checkpoint / "meta.json").read_text())["world_size"] == 4

    # the checkpoint the 4 ranks wrote, gathered into one unsharded model here, scores the eval split
    # exactly as the job's own distributed evaluation did
    again = evaluate_unsharded(run)
    for task, values in metrics["metrics"].items():
        for name, value in values.items():
            assert again[task][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (task, name)
