"""What wraps every request, as plain ASGI: the request id, the database gate and budget, metrics, one log line.

Starlette's ``BaseHTTPMiddleware`` runs each request's app in extra tasks and
streams every response through a memory channel; at a holiday peak that was
measurable per request (docs/performance.md).  This middleware only wraps
``send`` to learn the status and add ``X-Request-ID``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import callbacks, errors, logs
from api.db_gate import DatabaseGate

log = logging.getLogger("zhangben.http")

# Paths that never touch the database, and calls that may legitimately take long (long-poll, streams, bills).
_NO_DATABASE = ("/healthz", "/metrics", "/docs", "/redoc", "/openapi.json")
REQUEST_BUDGET_SECONDS = 5.0


class Observe:
    """The outermost middleware of the API (``api.app``)."""

    def __init__(self, app: ASGIApp, probe_store: Callable[[Any], None]) -> None:
        self.app = app
        self.probe_store = probe_store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1") or uuid.uuid4().hex
        token = logs.request_id.set(rid)
        start = time.perf_counter()
        status = [500]
        started = [False]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self._within_budget(scope, receive, send_with_id, started)
        finally:
            self._record(scope, status[0], time.perf_counter() - start)  # the access line carries the request id
            logs.request_id.reset(token)

    async def _within_budget(self, scope: Scope, receive: Receive, send: Send, started: list[bool]) -> None:
        """A 503 at once while the database is known down; a 503 after the budget if a call hangs on it."""
        app_state = scope["app"].state
        gate: DatabaseGate | None = getattr(app_state, "db_gate", None)
        path: str = scope["path"]
        if gate is None or path.startswith(_NO_DATABASE):
            await self.app(scope, receive, send)
            return
        if not gate.is_open:
            await _unavailable(path)(scope, receive, send)
            return
        if _long(scope) or path.startswith("/wechatpay/"):
            await self.app(scope, receive, send)  # callbacks keep their own 4.5 s budget (api/callbacks.py)
            return
        try:
            await asyncio.wait_for(self.app(scope, receive, send), REQUEST_BUDGET_SECONDS)
        except TimeoutError:
            if started[0]:
                raise  # the answer has begun: nothing better can be sent now
            try:
                await asyncio.to_thread(self.probe_store, app_state.runtime)
            except Exception as exc:  # noqa: BLE001 — the database is the reason: say so, and stop sending it work
                gate.trip(str(exc))
                await _unavailable(path)(scope, receive, send)
                return
            busy = errors.problem(503, "Busy", f"no answer within {REQUEST_BUDGET_SECONDS:.0f}s; retry", "busy")
            await busy(scope, receive, send)

    @staticmethod
    def _record(scope: Scope, status: int, elapsed: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", "unmatched")
        method = scope["method"]
        metrics = getattr(scope["app"].state, "metrics", None)
        if metrics is not None:
            metrics.requests.labels(method, path, str(status)).inc()
            metrics.latency.labels(path).observe(elapsed)
        log.info(
            "%s %s %d",
            method,
            path,
            status,
            extra={"method": method, "route": path, "status": status, "duration_ms": round(elapsed * 1000, 1)},
        )


def _long(scope: Scope) -> bool:
    path: str = scope["path"]
    return (
        path.endswith("/stream")
        or Request(scope).query_params.get("wait", "0") != "0"
        or path.startswith("/v1/finance")
    )


def _unavailable(path: str) -> Response:
    if path.startswith("/wechatpay/"):
        return callbacks.database_unavailable(path)
    return errors.database_unavailable()
