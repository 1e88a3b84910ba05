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
