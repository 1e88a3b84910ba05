"""Scoring latency and throughput of `recsys-mtl serve` over loopback, beside the model's own time.

For 1 and 2 uvicorn workers, 100 and 500 candidates per request and 1 and 8 concurrent connections,
a bounded closed-loop load generator (bench/loadgen.py) sends the same request N times and reports
p50/p99 latency and requests/s. Beside each row: the model's forward time for the same batch in this
process (encoded features -> network -> outputs and score, with the thread count a worker uses), and
the whole in-process path (JSON parse, validation, encoding, forward, JSON response). `server` is the
server's own time per request (its Server-Timing header: body read to response bytes), `server/fwd`
its p50 over the forward's p50, `client/fwd` the same for the latency the client sees (which adds
loopback TCP and HTTP framing). The load generator shares the machine's cores with the server.

    python bench/serve_latency.py [--model MODEL_ROOT] [--data TEST_DIR] [--requests 400]

Without --model it generates 200k rows, trains the default model for 100 steps and exports it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import torch
from latency import latency_ms  # bench/latency.py
from loadgen import run_load  # bench/loadgen.py (this script runs as bench/serve_latency.py)

from recsys_mtl.export.artifact import resolve_model_path
from recsys_mtl.export.load import load_scorer
from serving.launch import running_server
from serving.request import feature_rules, parse_request, per_candidate
from serving.rows import request_from_rows
from serving.settings import default_torch_threads

ROOT = Path(__file__).resolve().parents[1]


def prepare_model(work: Path) -> tuple[Path, Path]:
    """Generated data, the default model trained briefly, exported: (model root, test split)."""
    run = [sys.executable, "-m", "recsys_mtl", "--log-level", "WARNING"]
    subprocess.run([*run, "generate", "--out", str(work / "data"), "--rows", "200000"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        [*run, "train", "--config", str(work / "data" / "config.yaml"), "--out", str(work / "run"), "train.max_steps=100", "data.eval=null"],
        check=True, stdout=subprocess.DEVNULL,
    )
    subprocess.run([*run, "export", "--run", str(work / "run"), "--out", str(work / "models")], check=True, stdout=subprocess.DEVNULL)
    return work / "models", work / "data" / "test"


def in_process(model: Path, bodies: dict[int, bytes], threads: int, repeats: int) -> dict[int, dict[str, tuple]]:
    """Per candidate count: the forward alone and the whole request path, in this process."""
    torch.set_num_threads(threads)
    scorer = load_scorer(model)
    rules = feature_rules(scorer.config, {})
    out = {}
    for n, body in bodies.items():
        encoded = parse_request(body, rules, 10_000).encode(scorer)

        def whole(body=body):
            parsed = parse_request(body, rules, 10_000)
            outputs = scorer.forward(parsed.encode(scorer), parsed.num_candidates)
            return orjson.dumps(per_candidate({k: v.numpy() for k, v in outputs.items()}))

        out[n] = {
            "forward": latency_ms(lambda encoded=encoded, n=n: scorer.forward(encoded, n), repeats),
            "whole": latency_ms(whole, repeats),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model root or version (default: prepare one)")
    parser.add_argument("--data", type=Path, help="Parquet rows to build requests from (the model's test split)")
    parser.add_argument("--requests", type=int, default=400, help="requests per measured configuration")
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--port", type=int, default=8311)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    if args.model is None:
        args.model, args.data = prepare_model(work)
    if args.data is None:
        raise SystemExit("--data: Parquet rows with the model's feature columns (e.g. the generated test split)")
    served = load_scorer(args.model)
    scorer_config = served.config
    rows = pq.read_table(args.data)
    bodies = {n: orjson.dumps(request_from_rows(rows.slice(0, n), scorer_config, "bench")) for n in args.candidates}
    cores = os.cpu_count() or 1
    print(f"model {resolve_model_path(args.model)}; {cores} cores; torch {torch.__version__}; {args.requests} requests per row")
    print(f"outputs per candidate: {', '.join(served.outputs)}")
    # the in-process reference runs with the thread count a server worker uses
    reference = {w: in_process(args.model, bodies, default_torch_threads(w), 300) for w in args.workers}
    header = (
        f"{'workers':>7} {'cands':>5} {'conns':>5} | {'p50 ms':>7} {'p99 ms':>7} {'req/s':>6} | {'server p50':>10} | "
        f"{'fwd p50':>7} {'fwd p99':>7} {'path p50':>8} | {'server/fwd':>10} {'client/fwd':>10}"
    )
    print(header)
    print("-" * len(header))
    for workers in args.workers:
        server = running_server(args.model, "--workers", str(workers), "--poll-seconds", "0", port=args.port,
                                log=work / f"server-{workers}.log")
        with server:
            for n in args.candidates:
                for conns in args.connections:
                    run_load("127.0.0.1", args.port, "/v1/score", bodies[n], 50, conns)  # warm-up
                    result = run_load("127.0.0.1", args.port, "/v1/score", bodies[n], args.requests, conns)
                    if result.failures:
                        raise RuntimeError(f"{result.failures} failed requests")
                    fwd50, fwd99 = reference[workers][n]["forward"]
                    whole50 = reference[workers][n]["whole"][0]
                    p50, server50 = result.percentile_ms(50), float(np.percentile(result.server_ms, 50))
                    print(
                        f"{workers:>7} {n:>5} {conns:>5} | {p50:>7.2f} {result.percentile_ms(99):>7.2f} "
                        f"{result.requests_per_s:>6.0f} | {server50:>10.2f} | {fwd50:>7.2f} {fwd99:>7.2f} {whole50:>8.2f} | "
                        f"{server50 / fwd50:>9.2f}x {p50 / fwd50:>9.2f}x"
                    )


if __name__ == "__main__":
    main()
