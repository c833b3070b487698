"""The sandbox's HTTP application: one router per audience, over one ``Sandbox``.

WeChat Pay v3 (``sandbox.http_wechatpay_v3``), v2 (``sandbox.http_wechatpay_v2``),
the mini-program login API (``sandbox.http_miniprogram``) and the
``/sandbox/*`` controls (``sandbox.http_controls``).  ``tls=True`` builds the
face of the mutual-TLS listener, the only one that serves ``/secapi/*``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response

from sandbox import http_controls, http_miniprogram, http_oauth, http_wechatpay_v2, http_wechatpay_v3
from sandbox.service import Sandbox

__all__ = ["Sandbox", "build_app"]

log = logging.getLogger("zhangben.sandbox")


def build_app(sandbox: Sandbox, *, run_worker: bool = True, tls: bool = False) -> Starlette:
    """The ASGI application; ``run_worker`` starts refund progress and notification delivery."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if run_worker:
            sandbox.start()
        yield
        if run_worker:
            sandbox.stop()

    async def log_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request.state.request_id = str(uuid.uuid4())
        start = time.perf_counter()
        response = await call_next(request)
        log.info(
            "%s %s %d %.1fms",
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - start) * 1000,
        )
        return response

    routes = [
        *http_wechatpay_v3.routes(sandbox),
        *http_wechatpay_v2.routes(sandbox, secapi=tls),
        *http_miniprogram.routes(sandbox),
        *http_oauth.routes(sandbox),
        *http_controls.routes(sandbox),
    ]
    return Starlette(
        routes=routes, lifespan=lifespan, middleware=[Middleware(BaseHTTPMiddleware, dispatch=log_requests)]
    )
