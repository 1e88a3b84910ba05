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
from recsys_mtl.report.headline import headline_text
from serving.launch import free_port, running_server
from serving.rows import request_from_rows

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pipelines" / "configs" / "demo.yaml"
WORK = ROOT / "demo" / "pipeline" / "demo"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def candidate_table(scores: list[dict[str, float]]) -> str:
    """One line per candidate, one column per output the server answered with (named by task, as the
    model's task list makes them, then the ranking score)."""
    names = list(dict.fromkeys(name for candidate in scores for name in candidate))
    widths = [max(len(name), 10) for name in names]
    lines = ["  candidate  " + "  ".join(name.rjust(w) for name, w in zip(names, widths, strict=True))]
    for i, candidate in enumerate(scores):
        values = (f"{candidate[n]:.4g}" if n in candidate else "-" for n in names)
        lines.append(f"  {i:>9}  " + "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True)))
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
        print(candidate_table(body["scores"]))
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
    # per task, the headline metrics its type and place in the task graph call for (binary: auc, plus gauc
    # and calibration on every row or conditional_auc for a funnel stage; regression: xauc, rmse)
    print(headline_text(json.loads((report / "metrics.json").read_text())))
    publish = manifest("publish")["outputs"]
    serve_and_score(Path(publish["path"]).parent, Path(manifest("generate")["outputs"]["config"]), args.port or free_port())
    say(f"demo done in {time.monotonic() - started:.0f} s: report {report / 'report.html'}, model {publish['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
