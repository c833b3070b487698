"""The FastAPI application: ``create_app()`` builds one per worker process."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from api import audit, callbacks, cashier, errors, events, finance, logs, merchant, ops, products
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
            response = await call_next(request)
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
