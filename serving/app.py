"""The scoring server (SPEC §6): ``create_app`` is the factory uvicorn calls in every worker.

Routes: ``POST /v1/score``, ``GET /healthz`` (alive), ``GET /readyz`` (model loaded and warmed),
``GET /metrics`` (Prometheus), ``POST /admin/reload`` (bearer token), ``/docs`` (OpenAPI).
A server following a model root whose versions are all rejected (corrupt, non-finite weights or
warm-up outputs) starts but is not ready: ``/readyz`` and ``/v1/score`` answer 503 with the reason
until a servable version is loaded (by a poll or ``/admin/reload``).
Scoring runs on the event loop thread: the work is CPU-bound and short, and one request at a time per
worker keeps torch's threads from competing (concurrency comes from workers).

``POST /v1/score`` takes only JSON (``Content-Type: application/json``, else 415: no cross-site simple
POST). A client that goes away while its body is read is no server error: it is counted under
``client_disconnect`` with status 499 (``request_timeout``, 408, when ``serving.protocol`` ended a body
that did not come in time), and not logged.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from recsys_mtl import __version__
from serving.metrics import ServerMetrics
from serving.openapi import score_openapi
from serving.protocol import READ_TIMED_OUT, REFUSALS
from serving.request import (
    REQUEST_ID_RULE,
    RequestError,
    clip,
    parse_request,
    per_candidate,
    valid_request_id,
)
from serving.settings import Settings
from serving.store import ModelStore, Refresh

log = logging.getLogger("serving")

ROUTES = ("/v1/score", "/healthz", "/readyz", "/metrics", "/admin/reload", "/docs", "/openapi.json")
CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection before the answer


def error(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message, "reason": reason}, status_code=status, headers=headers)


class HttpMetrics:
    """ASGI middleware: requests by route / method / status class and HTTP latency (a plain ASGI
    wrapper: Starlette's BaseHTTPMiddleware would cost more than a small request's scoring)."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = 500
        started = time.perf_counter()

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(route, scope["method"], f"{status // 100}xx").inc()
            self.metrics.http_latency.labels(route).observe(time.perf_counter() - started)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (declared or streamed) before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        size = f"{int(declared):,}" if len(declared) <= 18 else clip(declared, 20)
        raise RequestError(413, "body_too_large", f"the body has {size} bytes; this server takes at most {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "body_too_large", f"the body exceeds this server's limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, with any parameters (charset=utf-8)."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON: a form or text/plain body is what a cross-site page can
    POST without a CORS preflight."""
    given = request.headers.get("content-type")
    if not is_json(given):
        raise RequestError(
            415, "unsupported_media_type",
            f"send the body as JSON with Content-Type: application/json (got {clip(repr(given)) if given else 'none'})",
        )


def header_request_id(request: Request) -> str | None:
    """``X-Request-ID`` when given: the same rule as the body's ``request_id`` (it is echoed), else 400."""
    value = request.headers.get("x-request-id")
    if value is not None and not valid_request_id(value):
        raise RequestError(400, "bad_request_id", f"X-Request-ID must be {REQUEST_ID_RULE}, got {clip(repr(value))}")
    return value


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    metrics = ServerMetrics()
    store = ModelStore(settings.model)

    async def refresh() -> Refresh:
        result = await anyio.to_thread.run_sync(store.refresh)
        if result.changed:
            metrics.serving(result.version, result.previous)
            metrics.reloads.labels("loaded").inc()
        if result.rejected:  # each rejected version once
            metrics.reloads.labels("rejected").inc(len(result.rejected))
        return result

    async def poll() -> None:
        while True:
            await asyncio.sleep(settings.poll_seconds)
            try:
                await refresh()
            except Exception:  # noqa: BLE001 - e.g. the root vanished for a moment; keep serving
                log.exception("looking for a new model version failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(settings.torch_threads)
        await refresh()
        # the model and the libraries are long-lived: keep the collector from rescanning them (p99)
        gc.collect()
        gc.freeze()
        poller = asyncio.create_task(poll()) if settings.poll_seconds > 0 and store.follows_root else None
        if store.current is None:
            waiting = f"polling every {settings.poll_seconds:g} s" if poller is not None else "polling is off"
            log.error("NOT READY: %s; waiting for a servable version (%s; or POST /admin/reload)", store.not_ready, waiting)
        else:
            log.info("ready: model %s, %d torch threads", store.current.scorer.version, settings.torch_threads)
        # the lifespan state reaches serving.protocol: refusals made before the app sees a request
        yield {REFUSALS: lambda reason: metrics.errors.labels(reason).inc()}
        if poller is not None:
            poller.cancel()
        metrics.worker_exit()

    app = FastAPI(
        title="recsys-mtl scoring",
        version=__version__,
        description=(
            "Multi-task ranking: for each candidate, every output of the served model (one per task, named by "
            "the task, plus `<task>_given_<after>` for funnel stages) and the combined ranking `score`."
        ),
        lifespan=lifespan,
    )
    app.add_middleware(HttpMetrics, metrics=metrics)
    app.state.store = store

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        metrics.errors.labels(exc.reason).inc()
        return error(exc.status, exc.reason, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        metrics.errors.labels(reason).inc()
        where = f"{clip(request.method, 16)} {clip(request.url.path)}"
        return error(exc.status_code, reason, f"{exc.detail}: {where} (routes: see /docs)")

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, exc: ClientDisconnect) -> Response:
        # the answer goes nowhere; its status is what the request metrics record
        if request.scope.get(READ_TIMED_OUT):
            metrics.errors.labels("request_timeout").inc()
            return error(408, "request_timeout", "the request body did not arrive in time")
        metrics.errors.labels("client_disconnect").inc()
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", clip(request.method, 16), clip(request.url.path))
        metrics.errors.labels("internal").inc()
        return error(500, "internal", "internal error; it is logged on the server")

    @app.post("/v1/score", summary="Score a user's candidates", **score_openapi(None, None, settings.max_candidates))
    async def score(request: Request) -> Response:
        received = time.perf_counter()
        require_json(request)
        header_id = header_request_id(request)
        body = await read_body(request, settings.max_body_bytes)
        served = store.current  # this request finishes on this model, whatever a reload does meanwhile
        if served is None:
            raise RequestError(503, "not_ready", f"no model loaded: {store.not_ready or 'still starting'}")
        scorer = served.scorer
        parsed = parse_request(body, served.rules, settings.max_candidates)
        request_id = parsed.request_id or header_id or uuid.uuid4().hex
        started = time.perf_counter()
        encoded = parsed.encode(scorer)
        encoded_at = time.perf_counter()
        outputs = {name: value.numpy() for name, value in scorer.forward(encoded, parsed.num_candidates).items()}
        done = time.perf_counter()
        metrics.model_latency.labels("features").observe(encoded_at - started)
        metrics.model_latency.labels("forward").observe(done - encoded_at)
        metrics.candidates.observe(parsed.num_candidates)
        for feature, count in parsed.missing.items():
            metrics.missing_features.labels(feature).inc(count)
        metrics.observe_outputs(outputs, scorer.probabilities)
        payload: dict[str, Any] = {"request_id": request_id, "model_version": scorer.version, "scores": per_candidate(outputs)}
        content = orjson.dumps(payload)
        timing = (
            f"parse;dur={(started - received) * 1e3:.3f}, features;dur={(encoded_at - started) * 1e3:.3f}, "
            f"forward;dur={(done - encoded_at) * 1e3:.3f}, total;dur={(time.perf_counter() - received) * 1e3:.3f}"
        )
        headers = {"x-request-id": request_id, "server-timing": timing}
        return Response(content, media_type="application/json", headers=headers)

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", summary="Readiness: a model is loaded and warmed")
    async def readyz() -> Response:
        if store.current is None:
            return error(503, "not_ready", f"no model loaded: {store.not_ready}" if store.not_ready else "no model loaded yet")
        return JSONResponse({"status": "ready", "model_version": store.current.scorer.version})

    @app.get("/metrics", summary="Prometheus metrics (all workers)")
    async def prometheus() -> Response:
        content, media_type = metrics.exposition()
        return Response(content, media_type=media_type)

    @app.post("/admin/reload", summary="Switch to the newest complete model version now (bearer token)")
    async def reload(request: Request) -> Response:
        if settings.admin_token is None:
            raise RequestError(403, "admin_disabled", "admin routes are disabled: start the server with RECSYS_MTL_ADMIN_TOKEN set to a token (not blank)")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            metrics.errors.labels("unauthenticated").inc()
            return error(401, "unauthenticated", "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token.encode(), settings.admin_token.encode()):
            raise RequestError(403, "forbidden", "the bearer token is not the admin token")
        result = await refresh()
        if result.rejected and not result.changed:
            serving = f"still serving {result.version}" if result.version is not None else "nothing served (not ready)"
            raise RequestError(409, "version_rejected", f"{'; '.join(result.rejected)}; {serving}")
        if result.version is None:
            raise RequestError(503, "not_ready", f"no model loaded: {store.not_ready}")
        return JSONResponse(
            {"model_version": result.version, "changed": result.changed, "previous": result.previous,
             "rejected": "; ".join(result.rejected) or None}
        )

    described: dict[str, Any] = {}  # the Served the cached schema describes

    def openapi() -> dict[str, Any]:
        """The schema, for the version served now: rebuilt after a rollover (or before any model)."""
        served = store.current
        if app.openapi_schema is None or "served" not in described or described["served"] is not served:
            route = next(r for r in app.routes if isinstance(r, APIRoute) and r.path == "/v1/score")
            spec = score_openapi(served.scorer.config if served else None, served.rules if served else None, settings.max_candidates)
            route.openapi_extra, route.responses = spec["openapi_extra"], spec["responses"]
            app.openapi_schema, described["served"] = None, served
            FastAPI.openapi(app)  # builds and caches app.openapi_schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
