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
from api.db_gate import DatabaseGates

log = logging.getLogger("zhangben.http")

# Paths that never touch the database, and calls that may legitimately take long (long-poll, streams, bills).
_NO_DATABASE = ("/healthz", "/metrics", "/docs", "/redoc", "/openapi.json")
REQUEST_BUDGET_SECONDS = 5.0
QUICK_CHECK_SECONDS = 1.0  # a request unanswered after this has the database checked beside it


class Observe:
    """The outermost middleware of the API (``api.app``)."""

    def __init__(self, app: ASGIApp, probe_store: Callable[[Any], None]) -> None:
        self.app = app
        self.probe_store = probe_store
        self._probing: asyncio.Future[None] | None = None

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
        """A 503 at once while the database is known down, within about a second when a request meets it down
        (the database is checked beside any request slower than ``QUICK_CHECK_SECONDS``), and after the budget
        if a call hangs on a database that answers."""
        app_state = scope["app"].state
        gate: DatabaseGates | None = getattr(app_state, "db_gate", None)
        path: str = scope["path"]
        if gate is None or path.startswith(_NO_DATABASE):
            await self.app(scope, receive, send)
            return
        if not gate.is_open:
            await _unavailable(path)(scope, receive, send)
            return
        if is_long(scope) or path.startswith("/wechatpay/"):
            await self.app(scope, receive, send)  # callbacks keep their own 4.5 s budget (api/callbacks.py)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REQUEST_BUDGET_SECONDS
        abandoned = [False]

        async def answering(message: Message) -> None:  # an abandoned request's late answer is dropped
            if not abandoned[0]:
                await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, answering))
        try:
            if await _finished(task, QUICK_CHECK_SECONDS):
                return
            # slow: is it the database?  Checked beside the request (one probe at a time per worker), so a request
            # that meets a dead server is answered 503 within a second or two, not at the end of the budget
            probe = self._probe(app_state.runtime)
            await asyncio.wait({task, probe}, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
                return
            failure = probe.exception() if probe.done() else None
            if failure is not None:
                gate.trip(str(failure))  # the cells that do not answer close; with one cell, that one
                if gate.is_open:  # another cell failed, or this one: not known here, so the request goes on
                    failure = None
            if failure is None and await _finished(task, max(0.0, deadline - loop.time())):
                return
        except BaseException:
            abandoned[0] = True
            _abandon(task)
            raise
        abandoned[0] = True
        _abandon(task)
        if started[0]:
            raise TimeoutError("the answer had begun when the budget ran out")  # nothing better can be sent now
        if failure is not None:  # the database is the reason: say so (its gate is closed: no more work for it)
            await _unavailable(path)(scope, receive, send)
            return
        gate.suspect(f"no answer within {REQUEST_BUDGET_SECONDS:.0f}s", hung=True)  # a deposed, frozen primary?
        busy = errors.problem(503, "Busy", f"no answer within {REQUEST_BUDGET_SECONDS:.0f}s; retry", "busy")
        await busy(scope, receive, send)

    def _probe(self, runtime: Any) -> asyncio.Future[None]:
        """The database checked on a fresh connection, shared by every slow request of this worker meanwhile."""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(asyncio.to_thread(self.probe_store, runtime))
            self._probing.add_done_callback(lambda done: done.cancelled() or done.exception())  # read: no warning
        return self._probing

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


async def _finished(task: asyncio.Future[None], seconds: float) -> bool:
    """Whether ``task`` ended within ``seconds`` (its exception, if any, raised here)."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if done:
        task.result()
    return bool(done)


def _abandon(task: asyncio.Future[None]) -> None:
    """Cancelled and left to end by itself: its answer is no longer wanted, and waiting for the cancellation of a
    query on a frozen server (SIGSTOP: its kernel still acknowledges) would hold this answer ten seconds more."""
    if not task.done():
        task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


def is_long(scope: Scope) -> bool:
    """A live stream, a long-poll or a bill: it holds a connection while it mostly waits."""
    path: str = scope["path"]
    if path.endswith("/stream") or path.startswith("/v1/finance"):
        return True
    return b"wait=" in scope.get("query_string", b"") and Request(scope).query_params.get("wait", "0") != "0"


def _unavailable(path: str) -> Response:
    if path.startswith("/wechatpay/"):
        return callbacks.database_unavailable(path)
    return errors.database_unavailable()
