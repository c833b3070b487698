"""Followers never skip an event, with group commit, under concurrent writers, on real PostgreSQL.

Two ledgers (two connection pools, so two group-committing recorders whose
transactions really overlap) and twelve writer threads create orders and
record payments while a follower pages through the log the way
``projections.core`` does, remembering only its position.  Whatever it saw
must be exactly what the table holds when the writers stop: an id committed
after the follower had passed it would be lost for good.

The log's ids are ordered by its counter row (``adapters.recorders``).  The
same hammering runs with a random pause inside each insert's transaction,
after the ids are taken, so commits that could overtake each other would; and
on two partitions at once.  A negative control makes two inserts overlap by
hand — the first takes its id and stays open while the second commits — with
the shipped function (the second waits) and with one that takes ids from the
table's sequence without the counter (what the library's own function does):
only there does the follower read past the first's id and never see it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from psycopg.sql import SQL, Identifier

from adapters.persistence import connect, parse_url, partition_schema
from adapters.recorders import INSERT_FUNCTION, LedgerPostgresRecorder, columns
from application.ledger import Ledger
from application.orders import Orders
from bootstrap.ledger import open_ledger, open_store
from domain.notices import TransactionNotice
from domain.requests import OrderTerms
from zhangben.pgserver import ThrowawayPostgres

MCHID = "1900000001"
WRITERS_PER_LEDGER = 6
SECONDS = 4.0


@pytest.fixture
def url(postgres: ThrowawayPostgres) -> str:
    return postgres.create_database("follow")


@pytest.fixture
def ledgers(url: str) -> Iterator[tuple[Ledger, Ledger]]:
    first = open_ledger(url, create_tables=True)
    second = open_ledger(url)
    yield first, second
    first.close()
    second.close()


PAUSE = "PERFORM pg_sleep(random() * 0.003); "
# ids from the table's sequence, no counter: a transaction that took a smaller id may commit after a larger one
UNORDERED = (
    "CREATE OR REPLACE FUNCTION {schema}.{function}(events {schema}.{event}[]) RETURNS SETOF bigint "
    "LANGUAGE plpgsql AS $BODY$ BEGIN "
    "RETURN QUERY INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
    "SELECT originator_id, originator_version, topic, state FROM unnest(events) RETURNING notification_id; "
    "PERFORM pg_sleep(random() * 0.003); "
    "END; $BODY$"
)


def recorder_of(ledger: Ledger) -> LedgerPostgresRecorder:
    assert isinstance(ledger.recorder, LedgerPostgresRecorder)
    return ledger.recorder


def replace_insert_function(ledger: Ledger, body: str) -> None:
    """Swap the log's insert function for ``body`` (the shipped one, paused, or the negative control)."""
    recorder = recorder_of(ledger)
    table = recorder.events_table_name
    names = {
        "schema": Identifier(recorder.datastore.schema),
        "table": Identifier(table),
        "counter": Identifier(f"{table}_head"),
        "function": Identifier(f"{table}_insert_ordered"),
        "event": Identifier(recorder.stored_event_type_name),
    }
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(SQL(body).format(lock_timeout=5, **names))  # type: ignore[arg-type]  # our own constants


@pytest.mark.parametrize("insert", ["shipped", "paused"])
def test_a_follower_misses_nothing_while_writers_hammer_the_log(ledgers: tuple[Ledger, Ledger], insert: str) -> None:
    if insert == "paused":  # every insert's transaction dawdles after taking its ids: still nothing skipped
        replace_insert_function(ledgers[0], INSERT_FUNCTION.replace("INTO head; ", "INTO head; " + PAUSE))
    seen, stored, writes = hammer(ledgers)
    assert writes > 100  # the writers really ran
    assert max(recorder_of(ledger).largest_group for ledger in ledgers) > 1  # and their commits were grouped
    assert seen == stored  # every id, in order, none skipped, none twice
    assert len(set(stored)) == len(stored)


@pytest.mark.parametrize("insert", ["shipped", "paused"])
def test_each_partition_s_follower_misses_nothing_while_both_partitions_are_hammered(
    postgres: ThrowawayPostgres, insert: str
) -> None:
    """Two partitions (two schemas, each its own log and counter) written at once: each follower exact on its own."""
    store = parse_url(postgres.create_database("parts"))
    pairs = []
    for partition in (0, 1):
        schema = store.in_schema(partition_schema(partition))
        pairs.append((open_store(schema, create_tables=True), open_store(schema)))
    try:
        if insert == "paused":
            for first, _ in pairs:
                replace_insert_function(first, INSERT_FUNCTION.replace("INTO head; ", "INTO head; " + PAUSE))
        results: list[tuple[list[int], list[int], int]] = []
        threads = [threading.Thread(target=lambda pair=pair: results.append(hammer(pair))) for pair in pairs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for pair in pairs:
            for ledger in pair:
                ledger.close()
    assert len(results) == 2
    for seen, stored, writes in results:
        assert writes > 50
        assert seen == stored and len(set(stored)) == len(stored)
    assert results[0][1][:5] == results[1][1][:5] == [1, 2, 3, 4, 5]  # each partition numbers its own log


@pytest.mark.parametrize("insert", ["shipped", "unordered"])
def test_negative_control_an_id_committed_after_a_larger_one_is_missed_only_without_the_counter(
    ledgers: tuple[Ledger, Ledger], url: str, insert: str
) -> None:
    """Two inserts made to overlap by hand: the first takes its id and stays open, the second commits.

    With the shipped function the second waits for the first's commit (the
    counter row is locked), so ids become visible in order and the follower
    sees both.  With ids from the sequence and no counter (the negative
    control) the second commits first, the follower reads past the first's
    id, and when the first commits its event is never read: the check fails
    exactly where the counter is missing.
    """
    if insert == "unordered":
        replace_insert_function(ledgers[0], UNORDERED.replace("PERFORM pg_sleep(random() * 0.003); ", ""))
    recorder = recorder_of(ledgers[0])
    store = parse_url(url)
    seen: list[int] = []

    def follow() -> None:
        position = seen[-1] if seen else 0
        seen.extend(n.id for n in recorder.select_notifications(position, 100, inclusive_of_start=False))

    follow()
    with connect(store, 5) as first, connect(store, 5, autocommit=True) as second:
        (own,) = first.execute(recorder.insert_sql, columns([stored()])).fetchone() or (0,)  # open: not committed
        later: list[int] = []
        overtaking = threading.Thread(
            target=lambda: later.extend(r[0] for r in second.execute(recorder.insert_sql, columns([stored()])))
        )
        overtaking.start()
        overtaking.join(timeout=1.0)
        follow()  # what a follower reads while the first is still open
        waited = overtaking.is_alive()
        first.commit()
        overtaking.join(timeout=10)
    follow()
    stored_ids = [n.id for n in recorder.select_notifications(1, 1000)]
    if insert == "shipped":
        assert waited  # the second insert waited for the first's commit
        assert seen == stored_ids == sorted([own, *later])  # and the follower saw both, in order
    else:
        assert not waited and later[0] > own  # the second took a larger id and committed first
        assert own in stored_ids and own not in seen  # the first's event, committed later, was never read


def stored() -> StoredEvent:
    """An event of a new aggregate (followers read ids; they need not decode it)."""
    return StoredEvent(originator_id=uuid4(), originator_version=1, topic="test.Overlap", state=b"{}")


def hammer(ledgers: tuple[Ledger, Ledger]) -> tuple[list[int], list[int], int]:
    """Twelve writers for a few seconds and one follower: (ids the follower saw, ids stored, orders written)."""
    assert all(isinstance(ledger.recorder, LedgerPostgresRecorder) for ledger in ledgers)
    stop, written = threading.Event(), threading.Event()
    seen: list[int] = []
    writes = [0]
    lock = threading.Lock()

    def write(ledger: Ledger, worker: str) -> None:
        i = 0
        while not stop.is_set():
            no = f"F{worker}-{i}"
            _, payment = Orders(ledger).create_order(MCHID, no, OrderTerms(100, "follow", "native"))
            if i % 2 == 0:  # a second transaction on the same order: payment, order and index together
                Orders(ledger).record_payment_success(
                    TransactionNotice.paid(
                        payment.out_trade_no, f"42{worker}{i:020d}", 100, datetime.now(UTC), payer_total_fen=100
                    ),
                    "notification",
                )
            with lock:
                writes[0] += 1
            i += 1

    def follow(ledger: Ledger) -> None:
        position = 0
        while True:
            finished = written.is_set()  # every writer has returned: what is stored now is all there will be
            page = ledger.recorder.select_notifications(position, 200, inclusive_of_start=False)
            seen.extend(n.id for n in page)
            if page:
                position = page[-1].id
            elif finished:
                return
            else:
                time.sleep(0.001)

    writers = [
        threading.Thread(target=write, args=(ledger, f"{n}{w}"))
        for n, ledger in enumerate(ledgers)
        for w in range(WRITERS_PER_LEDGER)
    ]
    follower = threading.Thread(target=follow, args=(ledgers[0],))
    follower.start()
    for thread in writers:
        thread.start()
    time.sleep(SECONDS)
    stop.set()
    for thread in writers:
        thread.join()
    written.set()
    follower.join(timeout=60)
    stored = [n.id for n in ledgers[0].recorder.select_notifications(1, 10_000_000)]
    return seen, stored, writes[0]


def test_group_commit_answers_each_caller_alone_when_one_conflicts(ledgers: tuple[Ledger, Ledger]) -> None:
    """Twenty threads record one payment at once: grouped or not, exactly one ``Paid`` is stored."""
    ledger = ledgers[0]
    _, payment = Orders(ledger).create_order(MCHID, "G-1", OrderTerms(100, "group", "native"))
    others = [Orders(ledger).create_order(MCHID, f"G-{i}", OrderTerms(100, "group", "native"))[1] for i in range(2, 12)]
    barrier = threading.Barrier(len(others) + 20)
    errors: list[BaseException] = []

    def pay(out_trade_no: str, transaction_id: str) -> None:
        barrier.wait()
        try:
            Orders(ledger).record_payment_success(
                TransactionNotice.paid(out_trade_no, transaction_id, 100, datetime.now(UTC), payer_total_fen=100),
                "notification",
            )
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=pay, args=(payment.out_trade_no, "42G1")) for _ in range(20)]
    threads += [threading.Thread(target=pay, args=(p.out_trade_no, f"42G{i}")) for i, p in enumerate(others, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ledger.recorder.largest_group > 1
    topics = [n.topic for n in ledger.recorder.select_notifications(1, 100_000)]
    assert topics.count("zhangben.Payment.Paid") == 1 + len(others)
    assert topics.count("zhangben.Order.Paid") == 1 + len(others)


def test_a_log_written_before_the_counter_goes_on_after_its_last_id(postgres: ThrowawayPostgres) -> None:
    """``db init`` on a log whose ids came from the table's sequence (no counter row yet) starts after them."""
    url = postgres.create_database("upgrade")
    ledger = open_ledger(url, create_tables=True)
    try:
        recorder = ledger.recorder
        assert isinstance(recorder, LedgerPostgresRecorder)
        replace_insert_function(ledger, UNORDERED.replace(PAUSE, ""))  # as today's `main` wrote: sequence ids
        for i in range(3):
            Orders(ledger).create_order(MCHID, f"U-{i}", OrderTerms(100, "upgrade", "native"))
        with recorder.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("DROP TABLE {}").format(Identifier(recorder.datastore.schema, "ledger_events_head")))
            log = f"{recorder.datastore.schema}.ledger_events"
            curs.execute("SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), 1000)", (log,))
        before = recorder.max_notification_id()
    finally:
        ledger.close()
    ledger = open_ledger(url, create_tables=True)  # `zhangben db init` again, with the counter
    try:
        Orders(ledger).create_order(MCHID, "U-after", OrderTerms(100, "upgrade", "native"))
        ids = [n.id for n in ledger.recorder.select_notifications(1, 1000)]
        assert before is not None and before < 1000
        new = [i for i in ids if i > before]
        assert len(ids) == len(set(ids)) and ids == sorted(ids)  # no id reused
        assert new == list(range(before + 1, before + 1 + len(new))) and new  # none skipped after the old log's last
    finally:
        ledger.close()
