"""recsys-mtl's equivalents, trained by its own loop (one process, TorchRec pipeline), exported, and
scored through the serving Scorer."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from latency import latency_ms  # bench/latency.py

from recsys_mtl.config import load_config
from recsys_mtl.export.export import export_run
from recsys_mtl.export.load import load_scorer
from recsys_mtl.train.loop import train

# the peers' tasks (no watch time): click, and conversion as an ESMM funnel stage after click (its
# `conversion` output is the entire-space p(click) x p(conversion | click), the peers' pCTCVR)
TASKS = ["tasks=[{name: click}, {name: conversion, after: click}]", "ranking.terms={click: 1.0, conversion: 0.5}"]
BACKBONES = {"mmoe": "model.backbone=mmoe", "esmm": "model.backbone=shared_bottom"}


def samples_per_s(run: Path, batch_size: int) -> float:
    """Steps after the first log interval over the time they took (the peers' warm-up rule)."""
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    steps = [(r["step"], r["time"]) for r in records if r["event"] == "train"]
    (first_step, first_time), (last_step, last_time) = steps[0], steps[-1]
    return (last_step - first_step) * batch_size / (last_time - first_time)


def run(kind: str, data: Path, work: Path, batch_size: int) -> dict:
    out = work / f"recsys-mtl-{kind}"
    overrides = [*TASKS, BACKBONES[kind], f"data.batch_size={batch_size}", "train.log_every_steps=50"]
    config = load_config(data / "config.yaml", overrides)
    result = train(config, out)
    path, _ = export_run(out, work / f"models-{kind}")
    scorer = load_scorer(path)
    test = pq.read_table(data / "test")
    latency = {}
    for n in (100, 500):
        # inputs built once (KJT + dense), as for every arm; timed: network, outputs and ranking score
        sparse, dense = scorer.processor.assemble(scorer.encode(test.slice(0, n)), n)
        latency[n] = latency_ms(lambda sparse=sparse, dense=dense: scorer.predict(sparse, dense))
    metrics = result["metrics"]
    return {
        "auc": {"click": metrics["click"]["auc"], "conversion": metrics["conversion"]["auc"]},
        "samples_per_s": samples_per_s(out, batch_size),
        "latency": latency,
    }
