"""Incremental training day by day (`make demo-daily`): a generated 4-day stream (new users and items
each day, drifting popularity), then for day d = 1..3 the pipeline of pipelines/configs/daily.yaml with
run id ``day-<d>``: train on day d from the model published after day d-1 (`training.init_from:
published`; day 1 from scratch), evaluate on day d+1's test split, gate against the published model
on that same split, export and publish into demo/daily/models. One line per day: the version published
after it, warm or cold start, the metrics, the gate's decision. Day 4 is only evaluated on.

    python pipelines/daily.py [--rows N] [--days 3]

A day the gate refuses is reported and the stream goes on: the published model stays, and the next day
warm-starts from it. Running again reports the finished days without redoing them (`rm -rf demo/daily`
to start over): a day's run is not re-run, because `published` would now name a later day's model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pipelines" / "configs" / "daily.yaml"
BASE = ROOT / "demo" / "daily"
DATA, WORK, MODELS = BASE / "data", BASE / "pipeline", BASE / "models"
METRICS = (("click", "auc"), ("click", "calibration"), ("conversion", "auc"), ("watch_time", "xauc"))


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)  # noqa: T201 - a demo talks to the person running it


def manifest(day: int, stage: str) -> dict | None:
    path = WORK / f"day-{day}" / stage / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def finished(day: int) -> bool:
    """Published, or refused by the gate (nothing more to do for that day)."""
    gate = manifest(day, "gate")
    return manifest(day, "publish") is not None or (gate is not None and not gate["outputs"]["passed"])


def summary(day: int) -> str:
    train, gate, publish = manifest(day, "train"), manifest(day, "gate"), manifest(day, "publish")
    start = train["inputs"]["init_from"] if train else None
    started = f"warm from {Path(start).name}" if start else "cold (nothing published)"
    report = json.loads((Path(manifest(day, "evaluate")["outputs"]["report"]) / "metrics.json").read_text())
    tasks = {t: task["metrics"] for t, task in report["tasks"].items()}
    values = "  ".join(f"{t} {m} {tasks[t][m]:.4f}" for t, m in METRICS if m in tasks.get(t, {}))
    reference = gate["outputs"]["published"] if gate else None
    checks = "; ".join(c["message"] for c in gate["outputs"]["checks"]) if gate else "no gate decision"
    decision = f"gate passed: {checks}" if gate and gate["outputs"]["passed"] else f"gate REFUSED, the published model stays: {checks}"
    version = publish["outputs"]["version"] if publish else f"(still {reference})"
    return (f"day {day}: train {train['seconds']:.0f} s, {started}; evaluated on day {day + 1} test: {values}\n"
            f"       {decision}; published: {version}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="generated rows per day (default 200,000)")
    parser.add_argument("--days", type=int, default=3, help="days trained (one more is generated to evaluate the last)")
    args = parser.parse_args()
    started = time.monotonic()
    if not (DATA / f"day_{args.days + 1}" / "config.yaml").is_file():
        say(f"recsys-mtl generate --out {DATA.relative_to(ROOT)} --rows {args.rows} --days {args.days + 1}")
        code = subprocess.call([sys.executable, "-m", "recsys_mtl", "generate", "--out", str(DATA), "--rows", str(args.rows),
                                "--days", str(args.days + 1)], cwd=ROOT)
        if code != 0:
            return code
    for day in range(1, args.days + 1):
        overrides = [f"training.config={DATA / f'day_{day}' / 'config.yaml'}", f"evaluate.data={DATA / f'day_{day + 1}' / 'test'}"]
        if finished(day):
            say(f"day {day}: done before (run {WORK / f'day-{day}'}), not re-run")
        else:
            say(f"day {day}: recsys-mtl pipeline --config {CONFIG.relative_to(ROOT)} --run-id day-{day} "
                + " ".join(o.replace(str(ROOT) + "/", "") for o in overrides))
            code = subprocess.call([sys.executable, "-m", "recsys_mtl", "pipeline", "--config", str(CONFIG), "--run-id", f"day-{day}",
                                    *overrides], cwd=ROOT)
            if code not in (0, 3):  # 3: the gate refused; the published model stays and the stream goes on
                return code
    say(f"{args.days} days in {time.monotonic() - started:.0f} s; model root {MODELS.relative_to(ROOT)}")
    for day in range(1, args.days + 1):
        print(summary(day))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
