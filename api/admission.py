"""Admission control: each worker takes what it can carry, answers the rest at once, and money comes first.

Past capacity a service that queues everything answers everyone late — at a
holiday peak (a 秒杀) orders offered at twice capacity were answered 503
after 25 s and only a tenth got through (issue 25).  Here each worker
process counts the requests it is working on; a request beyond
``max_in_flight`` waits its turn only as long as ``queue_seconds``, and is
answered ``503`` with ``Retry-After`` at once when the queue in front of it
cannot be served in that time (its expected wait, from the recent service
time, is too long).  What is admitted is served within its deadline; what is
shed was never started, so nothing is half-done: a shed create was never
recorded.

Two lanes: WeChat's callbacks and the payer's cashier page (money that has
moved, a payer waiting) may use ``reserve`` slots more than merchant calls,
wait longer (``callback_wait_seconds``, inside WeChat's five seconds), and
get freed slots first; a shed callback is answered FAIL, so WeChat sends it
again (https://pay.weixin.qq.com/doc/v3/merchant/4012791861: "接收通知失败…
微信会重新发送").  Health, readiness, metrics and the docs are never held.
Long calls (a live stream, a long-poll, a bill) are not counted: they mostly
wait.  The idea is Little's law with a bounded queue; see docs/operations.md
("Load past capacity") for the metrics.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from api import callbacks, errors
from api.observe import is_long
from bootstrap.settings import AdmissionLimits as Limits

# Never held: the probes an orchestrator and a scraper rely on, and static pages.
EXEMPT = ("/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json")
PRIORITY = ("/wechatpay/", "/pay/")  # WeChat's callbacks, the payer's cashier page
MERCHANT, FIRST = "merchant", "priority"
EWMA_WEIGHT = 0.1  # how fast the service-time estimate follows the work
DRAIN_LIMIT = callbacks.MAX_CALLBACK_BYTES  # a WeChat notification's bound; a merchant body is far smaller


class Shed(Exception):
    """No turn for this request: answered 503 at once."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("over capacity")
        self.retry_after = retry_after


class Turns:
    """The slots of one worker, handed out in order: the priority lane's waiters first, then merchants'."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.in_flight = 0
        self.waiting: dict[str, deque[asyncio.Future[None]]] = {FIRST: deque(), MERCHANT: deque()}
        self.service_seconds = 0.05  # the recent time one admitted request takes (EWMA)

    def _capacity(self, lane: str) -> int:
        return self.limits.max_in_flight + (self.limits.reserve if lane == FIRST else 0)

    def expected_wait(self, lane: str) -> float:
        """How long a request joining ``lane`` now would wait: everyone ahead of it served, ``max_in_flight`` at
        a time (Little's law)."""
        ahead = len(self.waiting[FIRST]) + (len(self.waiting[MERCHANT]) if lane == MERCHANT else 0)
        return (ahead + 1) * self.service_seconds / self.limits.max_in_flight

    async def take(self, lane: str) -> None:
        """A slot now, a slot within the lane's wait, or ``Shed``."""
        if self.in_flight < self._capacity(lane) and not self._ahead(lane):
            self.in_flight += 1
            return
        wait = self.limits.callback_wait_seconds if lane == FIRST else self.limits.queue_seconds
        expected = self.expected_wait(lane)
        if expected > wait:
            raise Shed(self._retry_after(expected))
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[lane].append(turn)
        try:
            await asyncio.wait({turn}, timeout=wait)  # the turn itself is never cancelled by the wait
        except asyncio.CancelledError:  # the request was abandoned while it waited
            if turn.done():
                self._release()  # a slot handed to it as it went: pass it on, or it is lost for good
            turn.cancel()
            raise
        finally:
            if turn in self.waiting[lane]:
                self.waiting[lane].remove(turn)
        if turn.done():  # given a slot (give_back hands it over: in_flight already counts it)
            return
        turn.cancel()
        raise Shed(self._retry_after(wait))

    def give_back(self, seconds: float) -> None:
        """A request finished after ``seconds``: the estimate of the service time follows, its slot is released."""
        self.service_seconds += EWMA_WEIGHT * (seconds - self.service_seconds)
        self._release()

    def _release(self) -> None:
        """A slot is free: it goes to the first waiter, priority lane first; merchants only below their limit."""
        for lane in (FIRST, MERCHANT):
            if lane == MERCHANT and self.in_flight > self.limits.max_in_flight:
                break  # a reserved slot is freed: it stays for the priority lane
            queue = self.waiting[lane]
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # the slot passes to it: in_flight unchanged
                    return
        self.in_flight -= 1

    def _ahead(self, lane: str) -> bool:
        return bool(self.waiting[FIRST] or (lane == MERCHANT and self.waiting[MERCHANT]))

    @staticmethod
    def _retry_after(seconds: float) -> int:
        return max(1, math.ceil(seconds))


class Admission:
    """The ASGI middleware (inside ``api.observe.Observe``, so shed requests are logged and counted too)."""

    def __init__(self, app: ASGIApp, limits: Limits | None = None, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.limits = limits
        self.routes = routes  # the app's routes, to name what is shed by its template
        self.turns: Turns | None = None  # made on the first request, from the runtime's settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(EXEMPT) or is_long(scope):
            await self.app(scope, receive, send)
            return
        turns = self._turns(scope)
        lane = FIRST if path.startswith(PRIORITY) else MERCHANT
        try:
            await turns.take(lane)
        except Shed as shed:
            _count(scope, lane, self.routes)
            await _drain(receive)  # the body read, so the connection stays open for the client's retry
            await _busy(path, shed.retry_after)(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            turns.give_back(time.perf_counter() - started)

    def _turns(self, scope: Scope) -> Turns:
        if self.turns is None:
            runtime = getattr(scope["app"].state, "runtime", None)
            limits = self.limits or getattr(getattr(runtime, "settings", None), "admission", None) or Limits()
            self.turns = Turns(limits)
        return self.turns


async def _drain(receive: Receive) -> None:
    """Read what is left of the request's body (a create's few hundred bytes, a callback's few KB): answering
    before it is read would make the server drop the keep-alive connection under the client.  A body past
    ``DRAIN_LIMIT`` is not read on: at capacity, that connection may close."""
    read = 0
    while read <= DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        read += len(message.get("body", b""))


def _busy(path: str, retry_after: int) -> Any:
    """503 with ``Retry-After``: problem+json for a merchant, WeChat's FAIL for a callback (it sends it again)."""
    if path.startswith("/wechatpay/"):
        answer = callbacks.busy(path)
    else:
        detail = "this worker is at capacity: retry after the time Retry-After gives"
        answer = errors.problem(503, "Busy", detail, "busy")
    answer.headers["Retry-After"] = str(retry_after)
    return answer


def _count(scope: Scope, lane: str, routes: Sequence[BaseRoute]) -> None:
    """``zhangben_requests_shed_total{route,lane}``: the route's template, found only for what is shed."""
    metrics = getattr(scope["app"].state, "metrics", None)
    if metrics is None:
        return
    route = "unmatched"
    for candidate in routes or scope["app"].router.routes:
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            route = getattr(candidate, "path", route)
            break
    metrics.shed.labels(route, lane).inc()
