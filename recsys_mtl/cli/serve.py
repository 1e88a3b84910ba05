"""``recsys-mtl serve``: the HTTP scoring server (SPEC §6) under uvicorn."""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import tempfile
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP scoring server: POST /v1/score, /metrics, /healthz, /readyz, /docs")
    p.add_argument("--model", type=Path, required=True, help="model root (newest version served, rollover) or one version")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="worker processes (each takes cores/workers torch threads)")
    p.add_argument("--max-candidates", type=int, default=1000, help="refuse larger candidate lists (413)")
    p.add_argument("--max-body-bytes", type=int, default=4 << 20, help="refuse larger bodies (413)")
    p.add_argument("--poll-seconds", type=float, default=10.0, help="look for a new version this often (0: on /admin/reload only)")
    p.add_argument("--torch-threads", type=int, default=None, help="intra-op threads per worker (default: half its share of the cores)")
    p.add_argument("--access-log", action="store_true", help="log every request (off: metrics count them)")
    limits = p.add_argument_group("connection limits, per worker (default: the RECSYS_MTL_<NAME> variable, else as shown)")
    limits.add_argument("--read-timeout-seconds", type=float, help="a request must arrive whole this soon after its first byte, else 408 (30)")
    limits.add_argument("--max-header-bytes", type=int, help="request line and headers at most this large, else 431 (16384)")
    limits.add_argument("--max-headers", type=int, help="at most this many header fields, else 431 (100)")
    limits.add_argument("--max-connections", type=int, help="open connections a worker serves; a request past them gets 503 (512)")
    limits.add_argument("--keep-alive-seconds", type=float, help="close a connection idle this long (5); keep above a proxy's idle timeout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from recsys_mtl.export.artifact import check_model_path
    from serving.protocol import NoDelayHttpToolsProtocol
    from serving.settings import HttpLimits

    check_model_path(args.model)  # fail here, with the reason, rather than in every worker
    env = {
        "MODEL": str(args.model.resolve()), "WORKERS": args.workers, "MAX_CANDIDATES": args.max_candidates,
        "MAX_BODY_BYTES": args.max_body_bytes, "POLL_SECONDS": args.poll_seconds,
    }
    if args.torch_threads is not None:
        env["TORCH_THREADS"] = args.torch_threads
    for name in ("read_timeout_seconds", "max_header_bytes", "max_headers", "max_connections", "keep_alive_seconds"):
        if getattr(args, name) is not None:  # else the variable, if set, stands
            env[name.upper()] = getattr(args, name)
    for key, value in env.items():
        os.environ[f"RECSYS_MTL_{key}"] = str(value)
    limits = HttpLimits.from_env()  # checked here (a bad value: exit 2); each worker's protocol reads them too
    metrics_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # the workers are fresh processes (spawned), so they import prometheus_client in multiprocess mode
        metrics_dir = tempfile.mkdtemp(prefix="recsys-mtl-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # uvicorn's own logging setup, plus this project's loggers (model loads, rollovers, errors)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    for name in ("serving", "recsys_mtl"):
        log_config["loggers"][name] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    # torch warns once per worker that KeyedJaggedTensor calls is_fx_tracing(); nothing to act on
    log_config["loggers"]["torch.fx._symbolic_trace"] = {"level": "ERROR"}
    try:
        uvicorn.run(
            "serving.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
            access_log=args.access_log, log_config=log_config, timeout_graceful_shutdown=10,
            http=NoDelayHttpToolsProtocol, loop="uvloop",
            # uvicorn answers 503 at len(connections) >= limit, the asking connection included
            limit_concurrency=limits.max_connections + 1, timeout_keep_alive=limits.keep_alive_seconds,  # type: ignore[arg-type]
            # a worker that does not answer uvicorn's ping this long is killed and restarted: importing
            # torch in several workers at once on a busy small node can hold the GIL past uvicorn's 5 s
            timeout_worker_healthcheck=30,
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
