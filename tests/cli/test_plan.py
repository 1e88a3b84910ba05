"""``recsys-mtl plan``: TorchRec's planner for a cluster this machine is not (2 nodes x 8 GPUs of 80 GB),
tables on the meta device, no GPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from recsys_mtl.cli import main
from recsys_mtl.cli.plan import layout
from recsys_mtl.config import ConfigError, load_config
from recsys_mtl.train.plan_check import parse_memory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "configs" / "example.yaml")
CLUSTER = ["--nodes", "2", "--nproc-per-node", "8", "--device", "cuda", "--memory-per-device", "80GB"]
# user_id at 3e9 rows x 128: 1.4 TB of weights, 90 GB per GPU even row-wise over all 16
HUGE = ["features.sparse.user_id.num_embeddings=3000000000", "features.sparse.user_id.dim=128"]


def test_plan_for_two_nodes_of_eight_80gb_gpus(capsys):
    assert main(["plan", "--config", EXAMPLE, *CLUSTER]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sharding plan for 16 ranks (2 node(s) x 8) on cuda, 80.000 GB HBM per device")
    tables = {m[0]: m[1:] for m in re.findall(r"^(\w+)\s+(\w+_wise)\s+(fused)\s+([\d,-]+)$", out, re.MULTILINE)}
    assert set(tables) == {t.name for t in load_config(EXAMPLE).features.sparse} | {"hist_categories"}
    assert all(sharding in {"table_wise", "row_wise", "table_row_wise", "column_wise", "table_column_wise"} for sharding, _, _ in tables.values())
    # every rank of both nodes: HBM and DDR of its shards, its share of the 68 GB embedding budget
    ranks = re.findall(r"^\s+(\d+)\s+([01])\s+([\d.]+) GB\s+([\d.]+) GB\s+[\d.]+%\s+[\d.]+\s+\d+$", out, re.MULTILINE)
    assert [(int(r), int(n)) for r, n, _, _ in ranks] == [(r, r // 8) for r in range(16)]
    assert all(float(hbm) > 0 for _, _, hbm, _ in ranks)
    # torchrec's own report: per-rank HBM/DDR and perf, the reservation
    assert "--- Planner Statistics ---" in out and "HBM (GB)" in out and "Perf (ms)" in out
    assert "Reserved Memory:" in out and "Percent of Total HBM: 15%" in out


def test_plan_json_and_pinned_sharding(capsys):
    assert main(["plan", "--config", EXAMPLE, "--world-size", "16", "--nodes", "2", "--memory-per-device", "80GB",
                 "--json", "train.sharding.item_id=column_wise"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fits"] and report["world_size"] == 16 and report["nodes"] == 2 and report["local_world_size"] == 8
    assert report["memory_per_device"] == 80 * 1024**3 and report["memory_for_embeddings"] == int(0.85 * 80 * 1024**3)
    assert {t["table"]: t["sharding"] for t in report["tables"]}["item_id"] == "column_wise"
    assert [r["rank"] for r in report["ranks"]] == list(range(16))


def test_the_optimizer_state_is_in_the_estimate(capsys):
    sizes = {}
    for optimizer in ("rowwise_adagrad", "adam"):
        assert main(["plan", "--config", EXAMPLE, "--world-size", "2", "--memory-per-device", "80GB", "--json",
                     f"train.embedding_optimizer={optimizer}"]) == 0
        sizes[optimizer] = sum(r["hbm"] for r in json.loads(capsys.readouterr().out)["ranks"])
    weights = sum(t.num_embeddings * t.dim * 4 for t in load_config(EXAMPLE).features.sparse)
    assert sizes["adam"] - sizes["rowwise_adagrad"] > 1.9 * weights  # Adam: two more values per weight


def test_a_table_too_large_for_the_gpus_exits_2_naming_it(capsys):
    assert main(["plan", "--config", EXAMPLE, *CLUSTER, "--brief", *HUGE]) == 2
    captured = capsys.readouterr()
    assert "NO PLAN FITS" in captured.out
    assert re.search(r"table user_id cannot fit: its smallest shard \(\w+\) needs 9\d\.\d+ GB of HBM on one device, which has 68\.000 GB", captured.out)
    assert "recsys-mtl plan: error: no sharding plan fits 16 x 80 GB (user_id too large)" in captured.err
    # the same table fits on GPUs of 141 GB (H200)
    assert main(["plan", "--config", EXAMPLE, "--nodes", "2", "--nproc-per-node", "8", "--memory-per-device", "141GB", "--brief", *HUGE]) == 0


@pytest.mark.parametrize(
    ("text", "size"), [("80GB", 80 * 1024**3), ("80 GiB", 80 * 1024**3), ("512MB", 512 * 1024**2), ("1.5T", int(1.5 * 1024**4)), ("4096", 4096)]
)
def test_parse_memory(text, size):
    assert parse_memory(text) == size


def test_layout_and_bad_arguments(capsys):
    assert layout(16, 2, None) == (16, 8) and layout(None, 2, 8) == (16, 8) and layout(8, None, None) == (8, 8)
    with pytest.raises(ConfigError, match="not a multiple of --nodes 3"):
        layout(16, 3, None)
    assert main(["plan", "--config", EXAMPLE, "--world-size", "16", "--memory-per-device", "lots"]) == 2
    assert "--memory-per-device: 'lots' is not a memory size" in capsys.readouterr().err
