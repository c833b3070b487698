"""Webhook delivery on both stores, with a hand-moved clock: signatures, retries for over a day, leases, order.

The receiver is a real HTTP server on a free port (answering what the test
says), or a port where nothing listens; the feed is a list of events.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from adapters.persistence import parse_url
from adapters.secretbox import DataKeys, write_new_keyring
from adapters.viewdb import ViewDatabase
from adapters.webhooks import WebhookStore, signature_header
from application.webhooks import RETRY_SCHEDULE, DeliveryWorker, Webhooks
from domain.errors import InvalidInput, NotFound
from tests.conftest import FakeClock
from zhangben.launch import free_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def doc_receiver(secret: str) -> dict[str, Any]:
    """The receiver of docs/webhooks.md, without its last line (which serves forever)."""
    code = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert code is not None
    lines = code.group(1).strip().splitlines()
    assert 12 <= len([line for line in lines if line.strip()]) <= 18, "the doc promises a receiver of about 15 lines"
    assert lines[-1].startswith("HTTPServer(")
    namespace: dict[str, Any] = {}
    os.environ["ZHANGBEN_WEBHOOK_SECRET"] = secret
    try:
        exec(compile("\n".join(lines[:-1]), str(DOC), "exec"), namespace)  # noqa: S102 — the doc's own example
    finally:
        del os.environ["ZHANGBEN_WEBHOOK_SECRET"]
    return namespace


@dataclass
class Event:
    seq: int
    mchid: str
    order_id: str
    type: str
    body: dict[str, object]


class ListFeed:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, mchid: str, order_id: str, kind: str = "order.paid") -> Event:
        seq = (self.events[-1].seq if self.events else 0) + 4
        event = Event(seq, mchid, order_id, kind, {"id": f"evt_{seq:016d}", "type": kind, "order": order_id})
        self.events.append(event)
        return event

    def page(
        self, mchid: str, after: int, limit: int, types: Sequence[str] = (), until: int | None = None
    ) -> list[Event]:
        found = [
            e
            for e in self.events
            if e.mchid == mchid
            and e.seq > after
            and (not types or e.type in types)
            and (until is None or e.seq <= until)
        ]
        return found[:limit]

    def last_seq(self, mchid: str) -> int:
        return max((e.seq for e in self.events if e.mchid == mchid), default=0)

    def by_seq(self, seq: int) -> Event | None:
        return next((e for e in self.events if e.seq == seq), None)


class Receiver:
    """An HTTP server that records what it gets and answers ``status`` (after ``delay`` seconds)."""

    def __init__(self) -> None:
        self.status = 204
        self.delay = 0.0
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received.append((dict(self.headers), body))
                time.sleep(outer.delay)
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(b"" if outer.status == 204 else b"not now")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def box(tmp_path: Path) -> DataKeys:
    write_new_keyring(tmp_path / "data_key")
    return DataKeys(tmp_path / "data_key")


@pytest.fixture
def hooks(database_url: str, clock: FakeClock, box: DataKeys) -> Iterator[tuple[Webhooks, ListFeed]]:
    db = ViewDatabase(parse_url(database_url))
    store = WebhookStore(db, box)
    store.create_tables()
    feed = ListFeed()
    webhooks = Webhooks(store, feed, clock)
    yield webhooks, feed
    webhooks.http.close()
    db.close()


def deliver_due(webhooks: Webhooks) -> int:
    """Synchronous rounds (queue, then send each due delivery once) until nothing is due; how many were sent."""
    sent = 0
    while True:
        webhooks.enqueue()
        due = webhooks.store.due(webhooks.clock(), 100)
        if not due:
            return sent
        for delivery in due:
            if webhooks.store.claim(delivery, webhooks.clock()):
                webhooks.send(delivery)
                sent += 1


def test_the_doc_receiver_accepts_what_is_sent_and_refuses_forged_and_stale() -> None:
    receiver = doc_receiver("whsec_test")
    verified = receiver["verified"]
    body = b'{"id":"evt_0000000000000004","type":"order.paid"}'
    now = int(time.time())
    assert verified(signature_header(["whsec_test"], now, body), body)
    assert not verified(signature_header(["whsec_forged"], now, body), body)  # wrong secret
    assert not verified(signature_header(["whsec_test"], now, body), body + b" ")  # body changed
    assert not verified(signature_header(["whsec_test"], now - 3600, body), body)  # stale: a replay
    assert not verified("t=abc,v1=00", body) and not verified("", body)
    # during a rotation both secrets sign: a receiver still on the old one accepts
    assert verified(signature_header(["whsec_new", "whsec_test"], now, body), body)


def test_an_endpoint_gets_signed_events_from_its_creation_on(
    hooks: tuple[Webhooks, ListFeed], receiver: Receiver
) -> None:
    webhooks, feed = hooks
    feed.add("M1", "o-before")
    endpoint = webhooks.create_endpoint("M1", receiver.url, ["order.paid", "refund.succeeded"])
    assert endpoint.secret.startswith("whsec_") and endpoint.secret not in json.dumps(endpoint.public())
    feed.add("M1", "o1")
    feed.add("M1", "o1", "order.closed")  # not a type it takes
    feed.add("M2", "o2")  # another merchant's
    feed.add("M1", "o1", "refund.succeeded")
    assert deliver_due(webhooks) == 2
    verify = doc_receiver(endpoint.secret)["verified"]
    assert [json.loads(b)["order"] for _, b in receiver.received] == ["o1", "o1"]
    assert [h["Zhangben-Event-Type"] for h, _ in receiver.received] == ["order.paid", "refund.succeeded"]
    assert all(verify(h["Zhangben-Signature"], b) for h, b in receiver.received)
    assert deliver_due(webhooks) == 0  # delivered once
    [attempt] = webhooks.deliveries("M1", feed.events[1].seq)
    assert attempt["status_code"] == 204 and attempt["delivery_state"] == "delivered"
    assert webhooks.deliveries("M2", feed.events[1].seq) == []  # not M2's endpoint
    with pytest.raises(InvalidInput):
        webhooks.create_endpoint("M1", "ftp://example.com/x")
    with pytest.raises(InvalidInput):
        webhooks.create_endpoint("M1", receiver.url, ["order.shipped"])
    with pytest.raises(NotFound):
        webhooks.endpoint("M2", endpoint.id)


def test_a_failing_endpoint_is_retried_for_more_than_a_day_then_marked_failing(
    hooks: tuple[Webhooks, ListFeed], clock: FakeClock
) -> None:
    webhooks, feed = hooks
    endpoint = webhooks.create_endpoint("M1", f"http://127.0.0.1:{free_port()}/nobody-listens")
    first = clock()
    feed.add("M1", "o1")
    attempts = 0
    while webhooks.store.counts().get("failed", 0) == 0:
        attempts += deliver_due(webhooks)
        clock.advance(seconds=60)
        assert attempts <= len(RETRY_SCHEDULE) + 1
    assert attempts == len(RETRY_SCHEDULE) + 1
    history = webhooks.deliveries("M1", feed.events[0].seq)
    assert len(history) == attempts and all(a["status_code"] is None and a["error"] for a in history)
    assert clock() - first > timedelta(hours=24)
    assert webhooks.endpoint("M1", endpoint.id).state == "failing"
    assert webhooks.store.counts()["endpoints_failing"] == 1
    # a redelivery that succeeds marks it active again
    assert webhooks.redeliver("M1", feed.events[0].seq) == 1


def test_non_2xx_is_retried_with_backoff_and_the_answer_recorded(
    hooks: tuple[Webhooks, ListFeed], receiver: Receiver, clock: FakeClock
) -> None:
    webhooks, feed = hooks
    webhooks.create_endpoint("M1", receiver.url)
    feed.add("M1", "o1")
    receiver.status = 503
    assert deliver_due(webhooks) == 1
    assert deliver_due(webhooks) == 0  # not due before its backoff
    clock.advance(seconds=RETRY_SCHEDULE[0] * 1.2 + 1)
    receiver.status = 200
    assert deliver_due(webhooks) == 1
    first, second = webhooks.deliveries("M1", feed.events[0].seq)
    assert (first["status_code"], first["response"], second["status_code"]) == (503, "not now", 200)
    assert second["delivery_state"] == "delivered"


def test_one_order_in_order_other_orders_and_endpoints_in_parallel(
    hooks: tuple[Webhooks, ListFeed], receiver: Receiver, clock: FakeClock
) -> None:
    webhooks, feed = hooks
    webhooks.create_endpoint("M1", receiver.url)
    paid, refunded, other = feed.add("M1", "o1"), feed.add("M1", "o1", "refund.succeeded"), feed.add("M1", "o2")
    webhooks.enqueue()
    due = {d.seq for d in webhooks.store.due(clock(), 10)}
    assert due == {paid.seq, other.seq} and refunded.seq not in due  # the refund waits for o1's payment
    receiver.status = 500
    deliver_due(webhooks)
    clock.advance(hours=40)
    receiver.status = 204
    for _ in range(20):
        deliver_due(webhooks)
        clock.advance(hours=9)
    orders = [(json.loads(b)["order"], h["Zhangben-Event-Type"]) for h, b in receiver.received if h]
    assert orders.index(("o1", "order.paid")) < orders.index(("o1", "refund.succeeded"))


def test_two_workers_never_hold_one_delivery_at_once(
    hooks: tuple[Webhooks, ListFeed], receiver: Receiver, database_url: str, clock: FakeClock, box: DataKeys
) -> None:
    webhooks, feed = hooks
    webhooks.create_endpoint("M1", receiver.url)
    for i in range(20):
        feed.add("M1", f"o{i}")
    other_db = ViewDatabase(parse_url(database_url))
    other = Webhooks(WebhookStore(other_db, box), feed, clock)
    try:
        receiver.delay = 0.05
        workers = [
            DeliveryWorker(webhooks, threads=4, per_endpoint=4),
            DeliveryWorker(other, threads=4, per_endpoint=4),
        ]
        deadline = time.monotonic() + 30
        while len({b for _, b in receiver.received}) < 20 and time.monotonic() < deadline:
            for w in workers:
                w.tick()
            time.sleep(0.01)
        for w in workers:
            while not w.idle():
                time.sleep(0.01)
            w.stop()
        bodies = [b for _, b in receiver.received]
        assert len(bodies) == 20 and len(set(bodies)) == 20, "each event sent exactly once by the two"
    finally:
        other.http.close()
        other_db.close()


def test_rotation_signs_with_both_secrets_for_the_grace_period(
    hooks: tuple[Webhooks, ListFeed], receiver: Receiver, clock: FakeClock
) -> None:
    webhooks, feed = hooks
    old = webhooks.create_endpoint("M1", receiver.url)
    new = webhooks.rotate_secret("M1", old.id, timedelta(hours=1))
    assert new.secret != old.secret and new.public()["previous_secret_valid_until"]
    feed.add("M1", "o1")
    deliver_due(webhooks)
    header, body = receiver.received[-1][0]["Zhangben-Signature"], receiver.received[-1][1]
    assert header.count("v1=") == 2
    assert doc_receiver(old.secret)["verified"](header, body) and doc_receiver(new.secret)["verified"](header, body)
    clock.advance(hours=2)
    feed.add("M1", "o2")
    deliver_due(webhooks)
    header, body = receiver.received[-1][0]["Zhangben-Signature"], receiver.received[-1][1]
    assert header.count("v1=") == 1 and not doc_receiver(old.secret)["verified"](header, body)


def test_a_slow_endpoint_holds_neither_the_worker_nor_another_merchant(hooks: tuple[Webhooks, ListFeed]) -> None:
    webhooks, feed = hooks
    slow, fast = Receiver(), Receiver()
    try:
        slow.delay = 1.0  # every answer takes a second
        webhooks.create_endpoint("M1", slow.url)
        webhooks.create_endpoint("M2", fast.url)
        for i in range(10):
            feed.add("M1", f"slow-{i}")
        for i in range(3):
            feed.add("M2", f"fast-{i}")
        worker = DeliveryWorker(webhooks, threads=4, per_endpoint=2)
        started = time.monotonic()
        while len(fast.received) < 3 and time.monotonic() - started < 10:
            worker.tick()
            time.sleep(0.01)
        # M2's events all arrived while M1's first two were still waiting on their slow answers
        assert len(fast.received) == 3
        assert len(slow.received) == 2, "M1's endpoint holds two threads at most, and M2 did not wait for it"
        worker.stop()
        while not worker.idle():  # the two slow sends finish before the database closes
            time.sleep(0.05)
    finally:
        slow.server.shutdown()
        fast.server.shutdown()
