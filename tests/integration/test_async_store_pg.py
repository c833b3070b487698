"""The event store from the event loop (``adapters.async_store``), on real PostgreSQL: what a callback's hot path
records without a thread is recorded once, durably, grouped, in the log's order — as on the synchronous path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from eventsourcing.persistence import IntegrityError

from adapters.async_store import AsyncEventStore
from adapters.persistence import parse_url
from adapters.recorders import LedgerPostgresRecorder
from application.apikeys import ApiKeys
from application.ledger import Ledger
from application.orders import Orders
from application.reads import OrderReads
from bootstrap.ledger import open_ledger
from domain.notices import TransactionNotice
from domain.requests import OrderTerms
from tests.integration.test_concurrency_pg import THREADS, paid_events
from zhangben.pgserver import ThrowawayPostgres

MCHID = "1900000001"


@pytest.fixture
def ledger(postgres: ThrowawayPostgres) -> Iterator[Ledger]:
    url = postgres.create_database("async")
    app = open_ledger(url, create_tables=True)
    assert isinstance(app.recorder, LedgerPostgresRecorder)
    app.async_store = AsyncEventStore(parse_url(url), app.recorder, app.mapper)
    yield app
    app.close()


def store_of(ledger: Ledger) -> AsyncEventStore:
    assert isinstance(ledger.async_store, AsyncEventStore)
    return ledger.async_store


def paid(out_trade_no: str, transaction_id: str) -> TransactionNotice:
    return TransactionNotice.paid(
        out_trade_no, transaction_id, 1000, datetime(2026, 12, 7, 10, tzinfo=UTC), payer_total_fen=1000
    )


def test_twenty_deliveries_at_once_on_the_loop_change_the_ledger_once(ledger: Ledger) -> None:
    _, payment = Orders(ledger).create_order(MCHID, "AS-1", OrderTerms(1000, "tea", "native"))
    store = store_of(ledger)

    async def storm() -> list[object]:
        notice = paid(payment.out_trade_no, "4200000101")
        calls = [Orders(ledger).record_payment_success_async(store, notice, "notification") for _ in range(THREADS)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        await store.close()
        return results

    results = asyncio.run(storm())
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(1 for r in results if r.changed) == 1  # type: ignore[attr-defined]
    assert paid_events(ledger) == {"zhangben.Payment.Paid": 1, "zhangben.Order.Paid": 1}
    assert OrderReads(ledger).order_view(MCHID, "AS-1")["status"] == "PAID"


def test_saves_that_arrive_together_share_one_commit_and_keep_the_logs_order(ledger: Ledger) -> None:
    payments = [Orders(ledger).create_order(MCHID, f"AS-G{i}", OrderTerms(1000, "tea", "native"))[1] for i in range(40)]
    store = store_of(ledger)
    head = ledger.recorder.max_notification_id() or 0

    async def many() -> None:
        notices = [paid(p.out_trade_no, f"42000002{i:02d}") for i, p in enumerate(payments)]
        await asyncio.gather(*(Orders(ledger).record_payment_success_async(store, n, "notification") for n in notices))
        await store.close()

    asyncio.run(many())
    assert store.largest_group > 1  # grouped: more than one callback's events in one transaction
    new = ledger.recorder.select_notifications(head + 1, 10_000)
    assert len(new) == 40 * 3  # each: Payment.Paid, Order.Paid, the transaction's index
    assert [n.id for n in new] == sorted(n.id for n in new)
    assert all(OrderReads(ledger).order_view(MCHID, f"AS-G{i}")["status"] == "PAID" for i in range(40))


def test_a_group_with_a_conflict_answers_each_save_alone(ledger: Ledger) -> None:
    """Two saves of one aggregate version in one group: one is stored, the other gets IntegrityError, and an
    unrelated save in the same group is stored all the same."""
    Orders(ledger).create_order(MCHID, "AS-C1", OrderTerms(1000, "tea", "native"))
    Orders(ledger).create_order(MCHID, "AS-C2", OrderTerms(1000, "tea", "native"))
    store = store_of(ledger)

    async def racing() -> list[object]:
        first, second = ledger.get_order(MCHID, "AS-C1"), ledger.get_order(MCHID, "AS-C1")
        other = ledger.get_order(MCHID, "AS-C2")
        now = datetime.now(UTC)
        first.close(now, "one")
        second.close(now, "two")
        other.close(now, "three")
        results = await asyncio.gather(store.save(first), store.save(second), store.save(other), return_exceptions=True)
        await store.close()
        return results

    results = asyncio.run(racing())
    assert sum(1 for r in results[:2] if isinstance(r, IntegrityError)) == 1 and results[2] is None, results
    assert ledger.get_order(MCHID, "AS-C1").status.value == "CLOSED"
    assert ledger.get_order(MCHID, "AS-C2").status.value == "CLOSED"


def test_an_api_key_is_checked_from_the_loop_and_a_revocation_holds_at_once(ledger: Ledger) -> None:
    keys = ApiKeys(ledger)
    key = keys.issue_api_key(MCHID, "merchant")
    key_id = key.split("_")[1]
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")

    async def check(*candidates: str) -> list[object]:
        found = [await keys.authenticate_async(candidate) for candidate in candidates]
        await store_of(ledger).close()
        return found

    holder, wrong, unknown = asyncio.run(check(key, forged, "zb_0000000000000000_" + "x" * 43))
    assert holder is not None and holder.mchid == MCHID and holder.role == "merchant"  # type: ignore[attr-defined]
    assert wrong is None and unknown is None
    keys.revoke_api_key(key_id)
    assert asyncio.run(check(key)) == [None]
