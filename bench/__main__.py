"""Benchmarks for the ledger's hot paths (contract §8).

Every figure is printed beside a baseline measured in the same run on the same
server, and as a ratio, so that a slower machine does not read as a
regression.  Results go to ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg

from tests.pgserver import ThrowawayPostgres
from zhangben.ledger import Ledger, open_ledger

MCHID = "1900000001"
PAYLOAD = b"x" * 300  # about the size of a stored Order.Created


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(count: int, step: Callable[[int], Any]) -> float:
    start = time.perf_counter()
    for i in range(count):
        step(i)
    return rate(count, time.perf_counter() - start)


def raw_pg_inserts(url: str, count: int) -> float:
    """Baseline: one-row INSERT transactions into a table shaped like the events table."""
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute(
            "CREATE TABLE raw_events (originator_id uuid, originator_version bigint, topic text, state bytea,"
            " notification_id bigserial, PRIMARY KEY (originator_id, originator_version))"
        )
        conn.execute("CREATE UNIQUE INDEX ON raw_events (notification_id)")
        conn.commit()

        def insert(_: int) -> None:
            conn.execute(
                "INSERT INTO raw_events (originator_id, originator_version, topic, state) VALUES (%s, 1, %s, %s)"
                " RETURNING notification_id",
                (uuid4(), "zhangben.Order.Created", PAYLOAD),
                prepare=True,
            )
            conn.commit()

        return timed(count, insert)


def raw_sqlite_inserts(path: Path, count: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE raw_events (originator_id text, originator_version integer, topic text, state blob,"
        " notification_id integer PRIMARY KEY AUTOINCREMENT, UNIQUE (originator_id, originator_version))"
    )

    def insert(_: int) -> None:
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO raw_events (originator_id, originator_version, topic, state) VALUES (?, 1, ?, ?)",
            (uuid4().hex, "zhangben.Order.Created", PAYLOAD),
        )
        conn.execute("COMMIT")

    result = timed(count, insert)
    conn.close()
    return result


def create_orders(ledger: Ledger, prefix: str, count: int) -> float:
    return timed(count, lambda i: ledger.create_order(MCHID, f"{prefix}{i}", 1000, "bench", "native"))


def pay_orders(ledger: Ledger, prefix: str, count: int) -> float:
    now = datetime.now(UTC)
    attempts = [ledger.get_order(MCHID, f"{prefix}{i}").attempts[0] for i in range(count)]
    return timed(
        count,
        lambda i: ledger.record_payment_success(attempts[i], f"42{prefix}{i}", 1000, 1000, now, "notification"),
    )


def replay(ledger: Ledger) -> tuple[int, float]:
    start = time.perf_counter()
    position, total = 0, 0
    while True:
        page = ledger.recorder.select_notifications(position, 500, inclusive_of_start=False)
        if not page:
            break
        for notification in page:
            ledger.mapper.to_domain_event(notification)
        total += len(page)
        position = page[-1].id
    return total, rate(total, time.perf_counter() - start)


def raw_pg_scan(url: str) -> float:
    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        position, total = 0, 0
        while True:
            rows = conn.execute(
                "SELECT notification_id, originator_id, originator_version, topic, state FROM ledger_events"
                " WHERE notification_id > %s ORDER BY notification_id LIMIT 500",
                (position,),
            ).fetchall()
            if not rows:
                break
            total += len(rows)
            position = rows[-1][0]
        return rate(total, time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--orders", type=int, default=2000, help="orders per measurement")
    args = parser.parse_args()
    n = args.orders
    rows: list[dict[str, Any]] = []

    def record(name: str, value: float, unit: str, baseline_name: str, baseline: float) -> None:
        rows.append({"figure": name, "value": round(value, 1), "unit": unit, "baseline": baseline_name,
                     "baseline_value": round(baseline, 1), "ratio": round(value / baseline, 3)})
        print(f"  {name:<44} {value:>10.0f} {unit:<9} {baseline_name:<34} {baseline:>10.0f}  ratio {value / baseline:.2f}",
              flush=True)

    print(f"zhangben bench — {n} orders per figure, {platform.machine()}, Python {platform.python_version()}")
    server = ThrowawayPostgres(durable=True)
    server.start()
    try:
        print("PostgreSQL (throwaway cluster, fsync on, loopback):")
        raw = raw_pg_inserts(server.create_database("raw"), n)
        url = server.create_database("bench")
        ledger = open_ledger(url, create_tables=True)
        record("create order (Order+Payment, 1 txn) /s", create_orders(ledger, "P", n), "orders/s",
               "raw 1-row INSERT txn /s", raw)
        record("record payment success /s", pay_orders(ledger, "P", n), "payments/s", "raw 1-row INSERT txn /s", raw)
        events, replay_rate = replay(ledger)
        record(f"replay {events} events (decode) /s", replay_rate, "events/s", "raw SELECT scan /s", raw_pg_scan(url))
        ledger.close()

        print("SQLite (WAL, synchronous=FULL):")
        with tempfile.TemporaryDirectory() as tmp:
            raw_sqlite = raw_sqlite_inserts(Path(tmp) / "raw.db", n)
            ledger = open_ledger(f"sqlite:///{tmp}/bench.db", create_tables=True)
            record("create order (Order+Payment, 1 txn) /s", create_orders(ledger, "S", n), "orders/s",
                   "raw 1-row INSERT txn /s", raw_sqlite)
            record("record payment success /s", pay_orders(ledger, "S", n), "payments/s",
                   "raw 1-row INSERT txn /s", raw_sqlite)
            ledger.close()
    finally:
        server.stop()
    out = Path(__file__).with_name("results.json")
    out.write_text(json.dumps({"when": datetime.now(UTC).isoformat(), "orders": n, "machine": platform.machine(),
                               "python": sys.version.split()[0], "figures": rows}, indent=2))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
