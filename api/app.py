"""The FastAPI application: ``create_app()`` builds one per worker process."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request, Response

from adapters.persistence import parse_url, ping
from api import audit, callbacks, cashier, errors, events, finance, logs, merchant, ops, products
from api.db_gate import DatabaseGate
from bootstrap.settings import load_settings
from bootstrap.wiring import Runtime, build_runtime

log = logging.getLogger("zhangben.http")


def create_app(rt: Runtime | None = None, *, projection_running: bool | None = None) -> FastAPI:
    """The app; without ``rt`` it builds its runtime from the settings when it starts."""
    if projection_running is None:
        projection_running = os.environ.get("ZHANGBEN_PROJECTIONS_RUNNING", "1") == "1"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = rt is None
        app.state.runtime = rt or build_runtime(load_settings())
        app.state.metrics = ops.Metrics(app.state.runtime)
        app.state.db_gate = DatabaseGate(partial(_probe, app.state.runtime))
        app.state.projection_running = projection_running
        yield
        if owned:
            app.state.runtime.close()

    app = FastAPI(
        title="zhangben",
        version="0.1.0",
        lifespan=lifespan,
        description="An event-sourced payment ledger for WeChat Pay. Money is always integer fen.",
    )
    errors.install(app)
    for module in (merchant, products, events, audit, finance, callbacks, cashier, ops):
        app.include_router(module.router)

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        token = logs.request_id.set(rid)
        start = time.perf_counter()
        try:
            response = await _within_budget(request, call_next)
        finally:
            logs.request_id.reset(token)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        elapsed = time.perf_counter() - start
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.requests.labels(request.method, path, str(response.status_code)).inc()
            metrics.latency.labels(path).observe(elapsed)
        response.headers["X-Request-ID"] = rid
        log.info(
            "%s %s %d",
            request.method,
            path,
            response.status_code,
            extra={
                "method": request.method,
                "route": path,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 1),
            },
        )
        return response

    return app


# Paths that never touch the database, and calls that may legitimately take long (long-poll, streams, bills).
_NO_DATABASE = ("/healthz", "/metrics", "/docs", "/redoc", "/openapi.json")
REQUEST_BUDGET_SECONDS = 5.0


def _long(request: Request) -> bool:
    path = request.url.path
    return path.endswith("/stream") or request.query_params.get("wait", "0") != "0" or path.startswith("/v1/finance")


async def _within_budget(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """A 503 at once while the database is known down; a 503 after the budget if a call hangs on it."""
    gate: DatabaseGate | None = getattr(request.app.state, "db_gate", None)
    if gate is None or request.url.path.startswith(_NO_DATABASE):
        return await call_next(request)
    if not gate.is_open:
        return _unavailable(request)
    if _long(request) or request.url.path.startswith("/wechatpay/"):
        return await call_next(request)  # callbacks keep their own 4.5 s budget (api/callbacks.py)
    try:
        return await asyncio.wait_for(call_next(request), REQUEST_BUDGET_SECONDS)
    except TimeoutError:
        try:
            await asyncio.to_thread(_probe_store, request.app.state.runtime)
        except Exception as exc:  # noqa: BLE001 — the database is the reason: say so, and stop sending it work
            gate.trip(str(exc))
            return _unavailable(request)
        return errors.problem(503, "Busy", f"no answer within {REQUEST_BUDGET_SECONDS:.0f}s; retry", "busy")


def _unavailable(request: Request) -> Response:
    if request.url.path.startswith("/wechatpay/"):
        return callbacks.database_unavailable(request.url.path)
    return errors.database_unavailable()


def _probe_store(rt: Runtime) -> None:
    ping(parse_url(rt.settings.database_url))


def _probe(rt: Runtime) -> None:
    """Back when a fresh connection answers and the event store's own pool does too.

    The pool's idle connections all died with the server: ``check()`` replaces
    them now, rather than each failing one request after the restart.
    """
    _probe_store(rt)
    pool = getattr(getattr(rt.ledger.recorder, "datastore", None), "pool", None)
    if pool is not None:
        pool.check()
    rt.ledger.recorder.max_notification_id()
