from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys_mtl.cli import main
from tests.train.conftest import check, main_in_process


def test_help_lists_the_subcommands():
    # in this process (python -m recsys_mtl, which every `cli` call of the suite runs, calls the same main)
    out = check(main_in_process("--help")).stdout
    for command in ("generate", "validate-data", "config"):
        assert command in out


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "recsys-mtl"  # installed into the same environment as python
    out = subprocess.run([str(script), "generate", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--task-corr" in out and "--rows" in out


def test_generate_then_validate_data_end_to_end(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path / "d"), "--rows", "6000", "--seed", "3"]) == 0
    assert "wrote 5,400 train rows" in capsys.readouterr().out
    code = main(
        ["validate-data", "--config", str(tmp_path / "d" / "config.yaml"), "--out", str(tmp_path / "v"), "data.batch_size=1000"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "== train: 5,400 rows kept of 5,400 read, 6 batches" in printed
    assert "== eval: 600 rows kept of 600 read, 1 batches" in printed
    assert "hist_categories" in printed and "rows/s" in printed
    summary = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert summary["train"]["rows"] == 5400 and summary["train"]["quality"]["rows_dropped"] == 0
    assert 0 < summary["train"]["features"]["user_age"]["buckets_seen"] <= 11
    assert 0.01 < summary["train"]["labels"]["click"] < 0.08
    assert summary["train"]["warnings"] == [] and summary["train"]["loss_at_init"]["click"] > 0.69
    saved = yaml.safe_load((tmp_path / "v" / "config.yaml").read_text())
    assert saved["data"]["batch_size"] == 1000
    assert set(json.loads((tmp_path / "v" / "dense_stats.json").read_text())) == {"price", "item_ctr_7d", "user_activity"}


def test_validate_data_warns_when_a_label_in_other_units_would_swamp_the_other_tasks(small_config_path, capsys):
    # watch time as if logged in milliseconds: its loss at initialisation dwarfs the binary tasks'
    assert main(["validate-data", "--config", str(small_config_path), "--split", "train", "tasks.watch_time.scale=1000"]) == 0
    logged = capsys.readouterr().err
    assert "WARNING" in logged and "task 'watch_time': loss at initialisation" in logged
    assert "set tasks.watch_time.scale" in logged


def test_config_command_prints_resolved_yaml_with_overrides(small_data, capsys):
    assert main(["config", "--config", str(small_data / "config.yaml"), "features.sparse.user_id.dim=32"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["features"]["sparse"][0]["dim"] == 32
    assert resolved["data"]["train"] == str((small_data / "train").resolve())


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["config", "--config", "{cfg}", "data.batchsize=3"], "data.batchsize: unknown key"),
        (["config", "--config", "{cfg}", "nonsense"], "not of the form key=value"),
        (["validate-data", "--config", "{cfg}", "data.train=/does/not/exist"], "data path not found: /does/not/exist"),
        (["generate", "--out", "{tmp}/g", "--task-corr", "2"], "task_corr must be in"),
    ],
)
def test_user_errors_exit_2_with_a_message_and_no_traceback(small_data, tmp_path, capsys, argv, fragment):
    argv = [a.format(cfg=small_data / "config.yaml", tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_generate_refuses_to_mix_with_old_data_unless_overwrite(tmp_path, capsys):
    argv = ["generate", "--out", str(tmp_path), "--rows", "2000"]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main([*argv, "--rows", "3000", "--overwrite"]) == 0
    assert "wrote 2,700 train rows" in capsys.readouterr().out
