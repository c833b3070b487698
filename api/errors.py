"""The one mapping from errors to ``application/problem+json`` (RFC 9457).

Nothing a client sends may produce a 500: validation is a 422 naming the
field, the ledger's refusals are 404/409, WeChat's trouble is 502/503.  A
real 500 logs an error id that the response carries.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.persistence import UNAVAILABLE, PartitionFrozen
from adapters.wechatpay.errors import (
    MerchantConfigError,
    SignatureError,
    WechatPayBusinessError,
    WechatPayError,
    WechatPayRateLimited,
    WechatPayUnavailable,
)
from domain.errors import ConcurrencyConflict, Conflict, Forbidden, InvalidInput, LedgerError, NotFound
from projections.order_status import CursorError

log = logging.getLogger("zhangben.api")
PROBLEM = "application/problem+json"
TYPE_BASE = "https://zhangben.dev/problems/"


def problem(status: int, title: str, detail: str, kind: str, **extra: Any) -> JSONResponse:
    body = {"type": TYPE_BASE + kind, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM, headers={"Retry-After": "1"} if status == 503 else None
    )


def database_unavailable() -> JSONResponse:
    return problem(503, "Database unavailable", "the database cannot be reached; retry shortly", "database")


def trip_gate(request: Request, exc: BaseException) -> None:
    """Tell this worker's gate (api/db_gate.py) the database may be down: it checks, and closes if so."""
    gate = getattr(request.app.state, "db_gate", None)
    if gate is not None and not isinstance(exc, PartitionFrozen):  # a move's freeze: the database is fine
        gate.suspect(str(exc), hung=isinstance(exc, TimeoutError))


def _field(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", "")} for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return problem(
            422,
            "Invalid request",
            f"{first['field']}: {first['message']}",
            "validation",
            field=first["field"],
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed"}
        response = problem(exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail), "http")
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(LedgerError)
    async def ledger_error(request: Request, exc: LedgerError) -> JSONResponse:
        if isinstance(exc, InvalidInput):
            return problem(422, "Invalid request", str(exc), "validation", field=exc.field)
        if isinstance(exc, NotFound):
            return problem(404, "Not found", str(exc), "not-found")
        if isinstance(exc, Forbidden):
            return problem(403, "Forbidden", str(exc), "forbidden")
        if isinstance(exc, Conflict):
            return problem(409, "Conflict", str(exc), "conflict")
        if isinstance(exc, ConcurrencyConflict):
            return problem(503, "Busy", str(exc), "busy")
        return problem(400, "Refused", str(exc), "refused")

    @app.exception_handler(CursorError)
    async def cursor_error(request: Request, exc: CursorError) -> JSONResponse:
        return problem(422, "Invalid request", str(exc), "validation", field="cursor")

    @app.exception_handler(MerchantConfigError)
    async def merchant_error(request: Request, exc: MerchantConfigError) -> JSONResponse:
        return problem(403, "Merchant not configured", str(exc), "merchant")

    @app.exception_handler(WechatPayError)
    async def wechat_error(request: Request, exc: WechatPayError) -> JSONResponse:
        if isinstance(exc, WechatPayUnavailable | WechatPayRateLimited):
            return problem(503, "WeChat Pay unavailable", str(exc), "wechatpay-unavailable", code=exc.code)
        if isinstance(exc, WechatPayBusinessError):
            return problem(409, "Refused by WeChat Pay", str(exc), "wechatpay-refused", code=exc.code)
        if isinstance(exc, SignatureError):
            return problem(502, "WeChat Pay answer not verified", str(exc), "wechatpay-signature", code=exc.code)
        return problem(502, "WeChat Pay error", str(exc), "wechatpay", code=exc.code)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        """The database is down or restarting: retry, it recovers by itself.

        Registered per exception type, so the answer is made where the route's
        errors are handled and nothing propagates to the server's error layer
        (which would log a traceback and may drop the connection).
        """
        trip_gate(request, exc)
        if isinstance(exc, PartitionFrozen):
            return problem(503, "Partition moving", str(exc), "database")
        return database_unavailable()

    for kind in UNAVAILABLE:
        app.exception_handler(kind)(unavailable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex
        log.exception("unhandled error %s on %s %s", error_id, request.method, request.url.path)
        return problem(500, "Internal error", f"error id {error_id}", "internal", error_id=error_id)
