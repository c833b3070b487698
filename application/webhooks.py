"""Webhooks: the merchant's endpoints, and the worker that pushes business events to them (docs/webhooks.md).

At-least-once from the log: the business-event projection is the source,
each endpoint's position in it moves only together with the deliveries it
queued, and a delivery is done only when the receiver answered 2xx.  Failed
attempts are retried with exponential backoff and jitter for more than a day
(``RETRY_SCHEDULE``), then the delivery is given up and the endpoint marked
failing (a metric).  Delivery runs on its own threads with a per-endpoint
cap, so a slow or dead endpoint holds at most that many threads: callbacks
never wait on it and other merchants' deliveries go on.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from adapters.persistence import is_unavailable
from adapters.webhooks import SIGNATURE_HEADER, Delivery, Endpoint, WebhookStore, signature_header
from domain.business_events import TYPES
from domain.errors import InvalidInput, NotFound

log = logging.getLogger("zhangben.webhooks")

EVENT_TYPES = TYPES
# Seconds before each retry: 5 s … 8 h, about 31.7 hours in all; divided by the time factor in tests.
RETRY_SCHEDULE = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800, 28800)
DEFAULT_GRACE = timedelta(hours=24)
TIMEOUT = httpx.Timeout(10.0, connect=3.0)


class FeedEvent(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def mchid(self) -> str: ...

    @property
    def order_id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def body(self) -> dict[str, object]: ...


class EventFeed(Protocol):
    """What the webhooks read of the business-event projection."""

    def page(
        self, mchid: str, after: int, limit: int, types: Sequence[str] = (), until: int | None = None
    ) -> Sequence[FeedEvent]: ...

    def last_seq(self, mchid: str) -> int: ...

    def by_seq(self, seq: int) -> FeedEvent | None: ...


class EndpointNotFound(NotFound):
    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"webhook endpoint {endpoint_id!r} not found")


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or len(url) > 2048:
        raise InvalidInput("url", "url must be an http(s) URL of at most 2048 characters")
    return url


def check_types(types: Sequence[str] | None) -> list[str]:
    if not types:
        return list(EVENT_TYPES)
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput("event_types", f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}")
    return [t for t in EVENT_TYPES if t in types]


class Webhooks:
    def __init__(
        self,
        store: WebhookStore,
        feed: EventFeed,
        clock: Callable[[], datetime],
        time_factor: float = 1.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.store = store
        self.feed = feed
        self.clock = clock
        self.time_factor = time_factor or 1.0
        self.http = http or httpx.Client(timeout=TIMEOUT, follow_redirects=False)

    # -- the merchant's endpoints ----------------------------------------------------------------

    def create_endpoint(self, mchid: str, url: str, types: Sequence[str] | None = None) -> Endpoint:
        """A new endpoint; it receives the events from now on.  Its secret is in the answer, and only there."""
        return self.store.add_endpoint(
            mchid, check_url(url), check_types(types), self.feed.last_seq(mchid), self.clock()
        )

    def endpoint(self, mchid: str, endpoint_id: str) -> Endpoint:
        found = self.store.endpoint(endpoint_id)
        if found is None or found.mchid != mchid:
            raise EndpointNotFound(endpoint_id)
        return found

    def endpoints(self, mchid: str) -> list[Endpoint]:
        return self.store.endpoints(mchid)

    def delete_endpoint(self, mchid: str, endpoint_id: str) -> None:
        self.store.delete_endpoint(self.endpoint(mchid, endpoint_id).id)

    def rotate_secret(self, mchid: str, endpoint_id: str, grace: timedelta = DEFAULT_GRACE) -> Endpoint:
        """A new secret; the old one signs too (a second ``v1``) until the grace period ends."""
        return self.store.rotate_secret(self.endpoint(mchid, endpoint_id).id, self.clock() + grace)

    # -- events and their deliveries ----------------------------------------------------------------

    def deliveries(self, mchid: str, seq: int) -> list[dict[str, object]]:
        return self.store.attempts(seq, [e.id for e in self.store.endpoints(mchid)])

    def redeliver(self, mchid: str, seq: int) -> int:
        event = self.feed.by_seq(seq)
        if event is None or event.mchid != mchid:
            raise NotFound(f"event {seq} not found")
        endpoints = [e.id for e in self.store.endpoints(mchid) if event.type in e.types]
        return self.store.redeliver(endpoints, seq, event.order_id, self.clock())

    # -- the worker's two steps ------------------------------------------------------------------------

    def enqueue(self) -> int:
        """Queue what each endpoint has not seen yet; returns how many deliveries were queued."""
        queued = 0
        for endpoint in self.store.endpoints():
            last = self.feed.last_seq(endpoint.mchid)
            if last <= endpoint.position:
                continue
            events = self.feed.page(endpoint.mchid, endpoint.position, 500, endpoint.types, until=last)
            if not events:
                self.store.skip_to(endpoint, last)  # only other types since: nothing to send
                continue
            if self.store.enqueue(endpoint, [(e.seq, e.order_id) for e in events], self.clock()):
                queued += len(events)
        return queued

    def send(self, delivery: Delivery) -> bool:
        """One attempt at one claimed delivery; records it; True if the receiver took it."""
        endpoint = self.store.endpoint(delivery.endpoint_id)
        event = self.feed.by_seq(delivery.seq)
        now = self.clock()
        if endpoint is None or event is None:
            self.store.record_attempt(delivery, now, None, 0, "endpoint deleted or event gone", "", None)
            return False
        body = _body(event)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "zhangben-webhooks/0.1",
            "Zhangben-Event-Id": str(event.body.get("id", "")),
            "Zhangben-Event-Type": event.type,
            SIGNATURE_HEADER: signature_header(endpoint.secrets_at(now), int(time.time()), body),
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        answer = ""
        try:
            response = self.http.post(endpoint.url, content=body, headers=headers)
            status, answer = response.status_code, response.text[:1024]
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        latency = int((time.perf_counter() - started) * 1000)
        ok = status is not None and 200 <= status < 300
        next_at = None if ok else self._next_attempt(delivery.attempts, now)
        self.store.record_attempt(delivery, now, status, latency, error, answer, next_at)
        if ok:
            self.store.mark_healthy(endpoint.id)
        elif next_at is None:
            log.warning(
                "webhook %s to %s given up after %d attempts", event.body.get("id"), endpoint.url, delivery.attempts + 1
            )
            self.store.mark_failing(endpoint.id, now)
        return ok

    def _next_attempt(self, attempts_before: int, now: datetime) -> datetime | None:
        if attempts_before >= len(RETRY_SCHEDULE):
            return None
        delay = RETRY_SCHEDULE[attempts_before] * random.uniform(0.8, 1.2) / self.time_factor  # noqa: S311 — jitter
        return now + timedelta(seconds=delay)


def _body(event: FeedEvent) -> bytes:
    return json.dumps(event.body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


class DeliveryWorker:
    """Queues and sends continuously on a small pool; at most ``per_endpoint`` sends to one endpoint at a time."""

    def __init__(self, webhooks: Webhooks, threads: int = 8, per_endpoint: int = 2, poll_seconds: float = 0.2) -> None:
        self.webhooks = webhooks
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook")
        self.threads = threads
        self.per_endpoint = per_endpoint
        self.poll_seconds = poll_seconds
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def tick(self) -> int:
        """Queue new deliveries and start as many due ones as there is room for; returns how many started."""
        self.webhooks.enqueue()
        now = self.webhooks.clock()
        started = 0
        for delivery in self.webhooks.store.due(now, self.threads * 4):
            with self._lock:
                if (
                    sum(self._busy.values()) >= self.threads
                    or self._busy.get(delivery.endpoint_id, 0) >= self.per_endpoint
                ):
                    continue
            if not self.webhooks.store.claim(delivery, now):
                continue  # another worker has it
            with self._lock:
                self._busy[delivery.endpoint_id] = self._busy.get(delivery.endpoint_id, 0) + 1
            self.pool.submit(self._send, delivery)
            started += 1
        return started

    def _send(self, delivery: Delivery) -> None:
        try:
            self.webhooks.send(delivery)
        except Exception:  # a delivery bug must not stop the worker; the lease lapses and it is retried
            self.errors += 1
            log.exception("webhook delivery %s/%s failed", delivery.endpoint_id, delivery.seq)
        finally:
            with self._lock:
                self._busy[delivery.endpoint_id] -= 1

    def idle(self) -> bool:
        with self._lock:
            return sum(self._busy.values()) == 0

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                started = self.tick()
            except Exception as exc:  # the database may blink; the worker carries on
                self.errors += 1
                if is_unavailable(exc):
                    log.warning("webhook worker: database unavailable; trying again shortly")
                    self._stop.wait(2.0)
                else:
                    log.exception("webhook worker tick failed")
                started = 0
            if not started:
                self._stop.wait(self.poll_seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.pool.shutdown(wait=False, cancel_futures=True)
