"""Projections: incremental equals rebuilt, on both stores; exactly once through SIGKILLs on PostgreSQL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from application.bills import Bills
from application.ledger import Ledger
from application.orders import Orders
from application.refunds import Refunds
from bootstrap.settings import Settings, load_settings
from bootstrap.wiring import Runtime, build_runtime, build_runtimes, init_database
from domain.bill import BillSummary
from domain.notices import RefundNotice, TransactionNotice
from domain.requests import NewRefund, OrderTerms
from projections.core import Follower
from zhangben.pgserver import ThrowawayPostgres

MCHID = "1900000001"


@pytest.fixture(params=[("sqlite", 1), ("postgres", 1), ("postgres", 8)], ids=["sqlite", "postgres", "partitioned"])
def runtime(request: pytest.FixtureRequest, keyset: Path, tmp_path: Path) -> Iterator[Runtime]:
    """The merchant's partition's runtime: on SQLite, on PostgreSQL, and on PostgreSQL with eight partitions
    (the merchant on partition 7: each partition's projections follow its own log)."""
    store, partitions = request.param
    if store == "sqlite":
        url = f"sqlite:///{tmp_path}/ledger.db"
    else:
        url = request.getfixturevalue("postgres").create_database("proj")
    config = tmp_path / "zhangben.toml"
    config.write_text(
        (keyset / "zhangben.toml").read_text(encoding="utf-8") + f"\n[partitioning]\npartitions = {partitions}\n",
        encoding="utf-8",
    )
    settings = load_settings({"ZHANGBEN_CONFIG": str(config), "ZHANGBEN_DATABASE_URL": url})
    init_database(settings)
    rt = build_runtimes(settings).at(MCHID)
    assert rt.number == (7 if partitions == 8 else 0)
    yield rt
    rt.close()


def some_history(ledger: Ledger, prefix: str, count: int) -> None:
    now = datetime.now(UTC)
    for i in range(count):
        _, payment = Orders(ledger).create_order(MCHID, f"{prefix}{i}", OrderTerms(1000 + i, "tea", "native"))
        if i % 4 == 3:
            continue
        Orders(ledger).record_payment_success(
            TransactionNotice.paid(payment.out_trade_no, f"42{prefix}{i}", 1000 + i, now, payer_total_fen=1000 + i),
            "query",
        )
        if i % 3 == 0:
            Refunds(ledger).request_refund(NewRefund(MCHID, f"{prefix}{i}", f"{prefix}R{i}", 100))
            Refunds(ledger).record_refund_result(
                MCHID, RefundNotice(out_refund_no=f"{prefix}R{i}", status="SUCCESS", refund_id="503", success_time=now)
            )
    Bills(ledger).record_bill_import(MCHID, date(2026, 11, 22), BillSummary(10, 5000, 300, 30, "sha1"))


def snapshot(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "order_status": sorted(
            tuple(r)
            for r in rt.db.execute(
                "SELECT order_id, status, amount_fen, paid_fen, refunded_fen, version, view FROM order_status"
            )
        ),
        "journal_lines": sorted(tuple(r) for r in rt.db.execute("SELECT * FROM journal_lines")),
        "ledger_money": sorted(tuple(r) for r in rt.db.execute("SELECT * FROM ledger_money")),
        "business_events": sorted(tuple(r) for r in rt.db.execute("SELECT * FROM business_events")),
    }


def test_rebuild_equals_incremental(runtime: Runtime) -> None:
    some_history(runtime.ledger, "RB", 12)
    for follower in runtime.followers.values():
        while follower.process_batch(limit=3):  # small batches: many transactions, many positions
            pass
    incremental = snapshot(runtime)
    assert len(incremental["order_status"]) == 12 and incremental["journal_lines"]
    counts: list[int] = []
    for follower in runtime.followers.values():
        follower.rebuild(progress=counts.append)
    assert snapshot(runtime) == incremental
    assert counts and counts[-1] == runtime.ledger.recorder.max_notification_id()
    # and the journal balances
    balance = runtime.journal.trial_balance(MCHID, date(2000, 1, 1), date(2100, 1, 1))
    assert balance["debit_fen"] == balance["credit_fen"] > 0


def test_an_order_view_from_before_paid_ms_gains_it_by_replaying(runtime: Runtime) -> None:
    """An upgrade adds a column to the view: ``db init`` adds it and the view is replayed to fill it."""
    some_history(runtime.ledger, "UP", 8)
    follower = runtime.followers["order_status"]
    follower.catch_up()
    runtime.db.execute("ALTER TABLE order_status DROP COLUMN paid_ms")  # the view as an older release left it
    follower.create_tables()  # what `zhangben db init` runs
    assert "paid_ms" in runtime.db.columns("order_status") and follower.position == 0
    follower.catch_up()
    created, paid, within, _ = runtime.orders.paid_latency([60_000])
    assert (created, paid, within) == (8, 6, [6])  # 2 of 8 never paid (some_history skips every fourth)


def test_a_rebuild_beside_a_running_runner_lets_the_runner_finish_it(runtime: Runtime) -> None:
    """``zhangben projections rebuild`` while ``serve`` follows the same projection: no error, the same rows."""
    some_history(runtime.ledger, "RR", 8)
    follower = runtime.followers["journal"]
    follower.catch_up()
    before = snapshot(runtime)
    projection = follower.projection
    serving = Follower(follower.log, runtime.db, projection)  # serve's runner of the same projection
    prepare = projection.prepare
    runner = threading.Thread(target=serving.catch_up)

    def raced(notifications: Any) -> Any:
        if not runner.is_alive() and runner.ident is None:  # the rebuild's first batch, read but not yet written:
            runner.start()  # serve's runner writes it first
            runner.join(30)
        return prepare(notifications)

    projection.prepare = raced  # type: ignore[method-assign]
    try:
        follower.rebuild()
    finally:
        projection.prepare = prepare  # type: ignore[method-assign]
    assert follower.position == runtime.ledger.recorder.max_notification_id()
    assert snapshot(runtime) == before


def test_a_second_runner_cannot_double_a_batch(runtime: Runtime) -> None:
    some_history(runtime.ledger, "TW", 3)
    follower = runtime.followers["journal"]
    prepared_at = follower.position
    notifications = runtime.ledger.recorder.select_notifications(prepared_at, 500, inclusive_of_start=False)
    follower.catch_up()  # another runner got there first
    before = snapshot(runtime)
    with pytest.raises(RuntimeError):
        prepared = follower.projection.prepare(notifications)
        with runtime.db.transaction():
            moved = runtime.db.rowcount(
                "UPDATE projection_tracking SET position = ? WHERE name = ? AND position = ?",
                (notifications[-1].id, "journal", prepared_at),
            )
            if moved != 1:
                raise RuntimeError("position moved")
            follower.projection.write(prepared)
    assert snapshot(runtime) == before


@pytest.mark.postgres
@pytest.mark.ha
def test_exactly_once_through_sigkills(postgres: ThrowawayPostgres, keyset: Path, tmp_path: Path) -> None:
    url = postgres.create_database("kill")
    env = {**os.environ, "ZHANGBEN_CONFIG": str(keyset / "zhangben.toml"), "ZHANGBEN_DATABASE_URL": url}
    settings: Settings = load_settings(env)
    init_database(settings)
    rt = build_runtime(settings)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write_events() -> None:
        i = 0
        try:
            while not stop.is_set():
                some_history(rt.ledger, f"K{i}-", 2)
                i += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    writer = threading.Thread(target=write_events)
    writer.start()
    rng = random.Random(20261122)
    kills = 0
    try:
        for _ in range(10):
            runners = [
                subprocess.Popen(
                    [sys.executable, "-m", "zhangben.cli", "projections", "run", name],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                for name in ("journal", "order_status", "business_events")
            ]
            try:
                for runner in runners:  # started and following the log: the kill lands mid-work
                    assert runner.stdout is not None and "following the log" in runner.stdout.readline()
                time.sleep(rng.uniform(0.05, 0.6))
            finally:
                for runner in runners:
                    runner.send_signal(signal.SIGKILL)
                    runner.wait()
                    kills += 1
    finally:
        stop.set()
        writer.join()
    assert not errors, errors
    assert kills == 30
    for follower in rt.followers.values():
        assert follower.position > 0  # the killed runners did make progress
        follower.catch_up()
    incremental = snapshot(rt)
    for follower in rt.followers.values():
        follower.rebuild()
    assert snapshot(rt) == incremental
    rt.close()


def test_streams_carried_across_batches_give_the_views_the_store_gives(runtime: Runtime) -> None:
    """The projections keep the streams they read and carry them forward with each batch's own events
    (``EventLog.streams_for``): with writes landing between small batches — new orders, and payments for
    orders many batches old — every row is the view computed from the store, and no stream is read twice."""
    follower = runtime.followers["order_status"]
    read: list[Any] = []
    recorder = runtime.ledger.recorder
    select = recorder.select_streams

    def counted(originator_ids: Any) -> Any:
        read.extend(originator_ids)
        return select(originator_ids)

    recorder.select_streams = counted  # type: ignore[method-assign]
    now = datetime.now(UTC)
    try:
        for round_ in range(4):
            some_history(runtime.ledger, f"CA{round_}-", 8)
            if round_:  # the orders the round before left unpaid are paid now, many batches after they were made
                for i in (3, 7):
                    otn = runtime.ledger.get_order(MCHID, f"CA{round_ - 1}-{i}").attempts[0]
                    Orders(runtime.ledger).record_payment_success(
                        TransactionNotice.paid(otn, f"43{round_}{i}", 1000 + i, now, payer_total_fen=1000 + i),
                        "query",
                    )
            while follower.process_batch(limit=5):
                pass
    finally:
        recorder.select_streams = select  # type: ignore[method-assign]
    rows = {r[0]: json.loads(r[1]) for r in runtime.db.execute("SELECT order_id, view FROM order_status")}
    from_store = runtime.rooms.reads.views_of_many([UUID(i) for i in rows])
    assert len(rows) == 32
    assert rows == {str(i): json.loads(json.dumps(view, ensure_ascii=False)) for i, view in from_store.items()}
    assert {row["status"] for row in rows.values()} >= {"PAID", "PARTIALLY_REFUNDED"}
    # read from the store only when first met before the batch that holds its first event (a save split by a
    # batch's end), and never again: without carrying, every batch that touches an order reads its streams anew
    assert len(read) == len(set(read)) < 32 * 3
