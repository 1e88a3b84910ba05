"""The whole loop on one machine (`make demo`): the demo pipeline (generate -> validate -> train on 2
processes -> evaluate -> gate -> export -> publish), then the scoring server on the published model,
one request scored over HTTP, the answer and the headline metrics beside the oracle's, server stopped.

    python pipelines/demo.py [--rows N] [--port P]

Runs again in seconds: the pipeline skips the stages it has done (run id "demo"; `rm -rf demo` to
start over).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq

from recsys_mtl.config import load_config
from serving.launch import free_port, running_server
from serving.rows import request_from_rows

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pipelines" / "configs" / "demo.yaml"
WORK = ROOT / "demo" / "pipeline" / "demo"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


HEADLINE = {
    "ctr": ("auc", "gauc", "calibration"),
    "ctcvr": ("auc", "cvr_auc_entire_space", "cvr_auc_clicked"),
    "watch_time": ("xauc", "rmse"),
}


def headline_table(report: dict) -> str:
    """The headline metrics of each task, the oracle's (the generator's true probabilities) beside."""
    lines = [f"{'task':<11} {'metric':<22} {'model':>8} {'oracle':>8}"]
    for task, names in HEADLINE.items():
        metrics = report["tasks"].get(task, {}).get("metrics", {})
        for name in names:
            if name in metrics:
                oracle = metrics.get(f"oracle_{name}")
                shown = f"{oracle:>8.4f}" if oracle is not None else f"{'-':>8}"
                lines.append(f"{task:<11} {name:<22} {metrics[name]:>8.4f} {shown}")
    return "\n".join(lines)


def manifest(stage: str) -> dict:
    return json.loads((WORK / stage / "manifest.json").read_text())


def serve_and_score(model_root: Path, config_path: Path, port: int) -> None:
    say(f"starting `recsys-mtl serve --model {model_root.relative_to(ROOT)} --port {port}`")
    # ServerNotReady names what went wrong; rerun the serve command above to see the server's output
    with running_server(model_root, port=port, timeout=120) as url:
        ready = httpx.get(url + "/readyz")
        print(f"ready: {ready.json()}")
        config = load_config(config_path)
        request = request_from_rows(pq.read_table(config.data.eval).slice(0, 3), config, "demo-1")
        say(f"POST {url}/v1/score (3 candidates of one user, from the test split)")
        print(json.dumps(request))
        response = httpx.post(url + "/v1/score", json=request, timeout=30)
        print(f"-> {response.status_code} (server time: {response.headers.get('server-timing', '?')})")
        body = response.json()
        print(json.dumps({k: v for k, v in body.items() if k != "scores"}))
        for i, scores in enumerate(body["scores"]):
            print(f"  candidate {i}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
        scored = [line for line in httpx.get(url + "/metrics").text.splitlines() if line.startswith("recsys_http_requests_total")]
        print("\n".join(scored))
    say("server stopped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None, help="generated rows (default: the demo config's 200,000)")
    parser.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    args = parser.parse_args()
    started = time.monotonic()
    say(f"pipeline: recsys-mtl pipeline --config {CONFIG.relative_to(ROOT)} --run-id demo")
    overrides = [f"generate.rows={args.rows}"] if args.rows else []
    code = subprocess.call([sys.executable, "-m", "recsys_mtl", "pipeline", "--config", str(CONFIG), "--run-id", "demo", *overrides], cwd=ROOT)
    if code != 0:
        return code
    report = Path(manifest("evaluate")["outputs"]["report"])
    say(f"evaluation report: {report / 'report.html'}")
    print(headline_table(json.loads((report / "metrics.json").read_text())))
    publish = manifest("publish")["outputs"]
    serve_and_score(Path(publish["path"]).parent, Path(manifest("generate")["outputs"]["config"]), args.port or free_port())
    say(f"demo done in {time.monotonic() - started:.0f} s: report {report / 'report.html'}, model {publish['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
