"""Concurrency is settled by the event store's optimistic versioning, on real PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from application.ledger import Ledger
from application.orders import Orders
from application.reads import OrderReads
from application.refunds import Refunds
from bootstrap.ledger import open_ledger
from domain.errors import RefundExceedsPaid
from domain.notices import TransactionNotice
from domain.requests import NewRefund, OrderTerms
from zhangben.pgserver import ThrowawayPostgres

MCHID = "1900000001"
THREADS = 20


@pytest.fixture
def ledger(postgres: ThrowawayPostgres) -> Iterator[Ledger]:
    app = open_ledger(postgres.create_database("conc"), create_tables=True)
    yield app
    app.close()


def all_at_once(count: int, call: Callable[[int], Any]) -> tuple[list[Any], list[BaseException]]:
    """Run ``call(i)`` in ``count`` threads released by one barrier."""
    barrier = threading.Barrier(count)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            value = call(i)
        except BaseException as exc:  # collected and asserted on below
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def paid_events(ledger: Ledger) -> Counter[str]:
    counts: Counter[str] = Counter()
    for n in ledger.recorder.select_notifications(1, 100_000):
        if n.topic in ("zhangben.Payment.Paid", "zhangben.Order.Paid"):
            counts[n.topic] += 1
    return counts


def test_twenty_threads_record_the_same_success_once(ledger: Ledger) -> None:
    _, payment = Orders(ledger).create_order(MCHID, "K-1", OrderTerms(1000, "tea", "native"))
    success_time = datetime(2026, 11, 22, 10, tzinfo=UTC)
    results, errors = all_at_once(
        THREADS,
        lambda _: Orders(ledger).record_payment_success(
            TransactionNotice.paid(payment.out_trade_no, "4200000001", 1000, success_time, payer_total_fen=1000),
            "notification",
        ),
    )
    assert errors == []
    assert sum(1 for r in results if r.changed) == 1
    assert paid_events(ledger) == {"zhangben.Payment.Paid": 1, "zhangben.Order.Paid": 1}
    assert OrderReads(ledger).order_view(MCHID, "K-1")["status"] == "PAID"


def test_twenty_concurrent_refunds_never_exceed_what_was_paid(ledger: Ledger) -> None:
    _, payment = Orders(ledger).create_order(MCHID, "K-2", OrderTerms(1000, "tea", "native"))
    Orders(ledger).record_payment_success(
        TransactionNotice.paid(payment.out_trade_no, "4200000002", 1000, datetime.now(UTC), payer_total_fen=1000),
        "query",
    )
    results, errors = all_at_once(
        THREADS, lambda i: Refunds(ledger).request_refund(NewRefund(MCHID, "K-2", f"K-2-R{i}", 150))
    )
    assert all(isinstance(e, RefundExceedsPaid) for e in errors), errors
    assert len(results) == 6  # 6 × 150 = 900 ≤ 1000 < 7 × 150
    order = ledger.get_order(MCHID, "K-2")
    assert order.committed_fen(payment.out_trade_no) == 900


def test_twenty_threads_creating_the_same_order_make_one(ledger: Ledger) -> None:
    results, errors = all_at_once(
        THREADS, lambda _: Orders(ledger).create_order(MCHID, "K-3", OrderTerms(1000, "tea", "native"))
    )
    assert errors == []
    assert len({order.id for order, _ in results}) == 1
    assert len(OrderReads(ledger).order_history(MCHID, "K-3")) == 3
