"""Job telemetry on rank 0: JSON lines in RUN/train_log.jsonl and an optional Prometheus endpoint."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

log = logging.getLogger("recsys_mtl.train")


class JobLog:
    """Appends one JSON object per event; mirrors the headline numbers to Prometheus gauges."""

    def __init__(self, path: Path, prometheus_port: int | None):
        self.path = path
        self.registry: CollectorRegistry | None = None
        if prometheus_port is not None:
            self.registry = CollectorRegistry()
            self.step = Gauge("recsys_train_step", "optimizer steps done", registry=self.registry)
            self.samples = Gauge("recsys_train_samples_per_second", "training throughput, all ranks", registry=self.registry)
            self.loss = Gauge("recsys_train_loss", "mean task loss over the last interval", ["task"], registry=self.registry)
            self.weight = Gauge("recsys_train_task_weight", "current loss weight of the task", ["task"], registry=self.registry)
            self.metric = Gauge("recsys_eval_metric", "latest evaluation metric", ["task", "metric"], registry=self.registry)
            start_http_server(prometheus_port, registry=self.registry)
            log.info("Prometheus job metrics on port %d", prometheus_port)

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": time.time(), **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
        if self.registry is None:
            return
        if event == "train":
            self.step.set(fields["step"])
            self.samples.set(fields["samples_per_s"])
            for task, value in fields["loss"].items():
                self.loss.labels(task).set(value)
            for task, value in fields.get("task_weights", {}).items():
                self.weight.labels(task).set(value)
        elif event == "eval":
            for task, metrics in fields["metrics"].items():
                for name, value in metrics.items():
                    self.metric.labels(task, name).set(value)
