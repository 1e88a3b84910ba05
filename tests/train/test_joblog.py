from __future__ import annotations

import json
import socket
import urllib.request

from recsys_mtl.train.joblog import JobLog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_json_lines_and_prometheus_endpoint_carry_the_same_numbers(tmp_path):
    port = free_port()
    log = JobLog(tmp_path / "train_log.jsonl", prometheus_port=port)
    log.write("train", step=40, samples_per_s=1234.5, loss={"click": 0.25, "conversion": 0.125}, task_weights={"click": 1.5, "conversion": 0.5})
    log.write("eval", step=40, metrics={"click": {"auc": 0.75}})
    records = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["train", "eval"]
    assert records[0]["loss"] == {"click": 0.25, "conversion": 0.125}
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "recsys_train_step 40.0" in body
    assert "recsys_train_samples_per_second 1234.5" in body
    assert 'recsys_train_loss{task="conversion"} 0.125' in body
    assert 'recsys_train_task_weight{task="click"} 1.5' in body
    assert 'recsys_eval_metric{metric="auc",task="click"} 0.75' in body


def _strict(line: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null_so_every_line_is_json(tmp_path):
    import numpy as np
    import torch

    log = JobLog(tmp_path / "train_log.jsonl", prometheus_port=None)
    log.write("train", step=3, loss={"a": float("nan"), "b": np.float32(0.5)}, grad_norm=float("inf"), lr=torch.tensor(1e-3).item())
    (record,) = [_strict(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert record["loss"] == {"a": None, "b": 0.5} and record["grad_norm"] is None and record["step"] == 3


def test_a_resumed_job_drops_what_the_previous_job_logged_after_its_checkpoint(tmp_path):
    path = tmp_path / "train_log.jsonl"
    first = JobLog(path, prometheus_port=None)
    for step in (5, 10):
        first.write("train", step=step)
    first.write("checkpoint", step=10)
    first.write("train", step=15)  # then killed: the resumed job redoes steps 11..15
    JobLog(path, prometheus_port=None, resumed_at=10).write("train", step=15)
    assert [(r["event"], r["step"]) for r in map(_strict, path.read_text().splitlines())] == [
        ("train", 5), ("train", 10), ("checkpoint", 10), ("train", 15),
    ]
    JobLog(path, prometheus_port=None)  # a new run (no checkpoint to resume): a new log
    assert path.read_text() == ""
