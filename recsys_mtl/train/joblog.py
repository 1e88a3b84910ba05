"""Job telemetry on rank 0: JSON lines in RUN/train_log.jsonl and an optional Prometheus endpoint."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

log = logging.getLogger("recsys_mtl.train")


def jsonable(value: Any) -> Any:
    """``value`` with every number a finite float or int: NaN and infinities (a diverged loss, the
    metric of a model that scores NaN) become null, since bare ``NaN`` is not JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    number = float(value)  # numpy and torch scalars too
    return number if math.isfinite(number) else None


class JobLog:
    """Appends one JSON object per event; mirrors the headline numbers to Prometheus gauges.

    ``resumed_at``: the step of the checkpoint a resumed job continues from. The events the previous
    job logged after it (the steps this job redoes) and its ``done`` are removed, so every step appears
    once; None starts a new log.
    """

    def __init__(self, path: Path, prometheus_port: int | None, resumed_at: int | None = None):
        self.path = path
        kept = []
        if resumed_at is not None and path.is_file():
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if record["event"] != "done" and record.get("step", 0) <= resumed_at:
                    kept.append(line + "\n")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
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
        record = jsonable({"event": event, "time": time.time(), **fields})
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
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
