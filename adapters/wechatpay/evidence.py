"""What the ledger said to WeChat Pay and what it answered, kept as evidence beside the aggregate it was for.

A notification is only half the story an auditor asks for: the prepay that
opened a payment, the query that found it paid, the close, the refund and its
query, and the bill download are the ledger's own side.  The clients report
each attempt here (``keep``); a use case that wants them wraps its calls in
``captured()`` and hands them to the ledger command that records them on the
payment, refund or day's bill (``*.WechatCalled`` events), so ``history``, the
console's timeline and the auditor's API show both sides.

Bounded (a body's first 4 KB, five attempts per use case) and redacted: the
``Authorization`` header and a v2 request's ``sign`` are our own signatures and
are never kept; query-string tokens and the like are masked
(``adapters.redaction``).  WeChat's own signature headers are kept: they are
what makes the answer WeChat's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adapters.redaction import MASK, redact

BODY_KEPT_CHARS = 4096
MAX_KEPT = 5  # attempts of one use case (retries included)
# WeChat's signature over its answer, its request id, and what the body is
KEPT_HEADERS = (
    "request-id",
    "wechatpay-timestamp",
    "wechatpay-nonce",
    "wechatpay-signature",
    "wechatpay-serial",
    "wechatpay-signature-type",
    "content-type",
)
_V2_SIGN = re.compile(r"(<sign>)(?:<!\[CDATA\[)?[^<\]]*(?:\]\]>)?(</sign>)")


@dataclass(frozen=True)
class Exchange:
    """One request to WeChat Pay and its answer (``status`` 0 and ``error``: no answer came)."""

    endpoint: str  # prepay, query, close, refund, refund_query, bill (adapters.wechatpay.retries.endpoint_of)
    method: str
    url: str
    request_body: str
    status: int
    response_headers: dict[str, str]
    response_body: str
    error: str
    at: str  # ISO 8601, UTC
    duration_ms: int

    def as_data(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "method": self.method,
            "url": self.url,
            "request_body": self.request_body,
            "status": self.status,
            "response_headers": dict(self.response_headers),
            "response_body": self.response_body,
            "error": self.error,
            "at": self.at,
            "duration_ms": self.duration_ms,
        }


@dataclass(frozen=True)
class Sending:
    """One request as it leaves for WeChat, timed from then: ``answered`` or ``unanswered`` makes its record."""

    endpoint: str
    method: str
    url: str
    body: bytes
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    clock: float = field(default_factory=time.monotonic)

    def answered(
        self, status: int, headers: Mapping[str, str], body: bytes, error: str = "", *, keep_response: bool = True
    ) -> Exchange:
        """The bounded, redacted record of the request and WeChat's answer (``keep_response=False``: a file's
        bytes, summarised)."""
        answer = _text(body) if keep_response else f"[{len(body)} bytes, kept apart]"
        return Exchange(
            endpoint=self.endpoint,
            method=self.method,
            url=redact(self.url),
            request_body=_V2_SIGN.sub(rf"\g<1>{MASK}\g<2>", _text(self.body)),
            status=status,
            response_headers={k.lower(): v[:512] for k, v in headers.items() if k.lower() in KEPT_HEADERS},
            response_body=answer,
            error=redact(error)[:500],
            at=self.started.astimezone(UTC).isoformat(),
            duration_ms=int((time.monotonic() - self.clock) * 1000),
        )

    def unanswered(self, error: str) -> Exchange:
        """The record of a request that got no answer (a timeout, a connection refused)."""
        return self.answered(0, {}, b"", error)


def _text(body: bytes) -> str:
    return redact(body[:BODY_KEPT_CHARS].decode("utf-8", "replace"))


_captured: ContextVar[list[Exchange] | None] = ContextVar("wechatpay_exchanges", default=None)


@contextmanager
def captured() -> Iterator[list[Exchange]]:
    """Collect the exchanges made inside the block (this thread's calls), for the ledger to record."""
    kept: list[Exchange] = []
    token = _captured.set(kept)
    try:
        yield kept
    finally:
        _captured.reset(token)


def keep(made: Exchange) -> None:
    """Called by the clients for every attempt; kept only inside ``captured()`` (and at most ``MAX_KEPT``)."""
    kept = _captured.get()
    if kept is not None and len(kept) < MAX_KEPT:
        kept.append(made)
