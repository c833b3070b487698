"""In-process micro-benchmarks of the ledger's commands (``python -m bench.micro``; ``make bench`` is the HTTP table).

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
import threading
import time
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg

from adapters.persistence import connect, parse_url
from adapters.viewdb import ViewDatabase
from adapters.wechatpay.callbacks import open_notification
from adapters.wechatpay.client import WechatPayClient
from adapters.wechatpay.config import load_merchants
from application.audit import Audit
from application.callbacks import Callbacks
from application.ledger import Ledger
from application.orders import Orders
from application.payments import PaymentService
from application.refunding import RefundService
from application.refunds import Refunds
from application.reviews import Reviews
from application.rooms import Rooms
from bench.webhooks import webhook_ingest
from bootstrap.ledger import open_ledger
from bootstrap.settings import Settings
from bootstrap.wiring import build_views, init_database
from domain.audit import Arrival
from domain.notices import TransactionNotice
from domain.requests import OrderTerms
from projections.core import Follower
from sandbox.keyset import DIRECT, init_keyset
from sandbox.notices import WechatSender, paid_transaction
from zhangben.pgserver import ThrowawayPostgres

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
    return timed(
        count, lambda i: Orders(ledger).create_order(MCHID, f"{prefix}{i}", OrderTerms(1000, "bench", "native"))
    )


def pay_orders(ledger: Ledger, prefix: str, count: int) -> float:
    now = datetime.now(UTC)
    attempts = [ledger.get_order(MCHID, f"{prefix}{i}").attempts[0] for i in range(count)]
    return timed(
        count,
        lambda i: Orders(ledger).record_payment_success(
            TransactionNotice.paid(attempts[i], f"42{prefix}{i}", 1000, now, payer_total_fen=1000), "notification"
        ),
    )


def callback_bodies(ledger: Ledger, keys_root: Path, prefix: str, count: int) -> list[tuple[dict[str, str], bytes]]:
    """Orders, and the TRANSACTION.SUCCESS notifications WeChat would send for them (signed, encrypted)."""
    wechat = WechatSender.from_keyset(keys_root / "keys", MCHID)
    callbacks = []
    for i in range(count):
        _, payment = Orders(ledger).create_order(MCHID, f"{prefix}{i}", OrderTerms(1000, "bench", "native"))
        resource = paid_transaction(MCHID, DIRECT.appid, payment.out_trade_no, 1000, f"42{prefix}{i:020d}")
        body = wechat.body("TRANSACTION.SUCCESS", resource)
        callbacks.append((wechat.headers(body), body))
    return callbacks


def payment_service(ledger: Ledger, keys_root: Path) -> PaymentService:
    tables = tomllib.loads((keys_root / "zhangben.toml").read_text())["merchants"]
    merchants = load_merchants(tables, keys_root / "zhangben.toml")
    return PaymentService(Rooms.over(ledger), WechatPayClient("http://127.0.0.1:9", merchants))


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def api_latencies(server: ThrowawayPostgres, count: int, threads: int = 4) -> dict[str, list[float]]:
    """A short load through HTTP against ``zhangben serve`` (2 workers, PostgreSQL): create, then callbacks."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from zhangben.deployment import deploy

    samples: dict[str, list[float]] = {"create": [], "callback": []}
    with tempfile.TemporaryDirectory() as tmp, deploy(Path(tmp), server.create_database("api"), workers=2) as d:
        d.faults(notifications="drop")  # callbacks come from the load below, not from the sandbox
        wechat = WechatSender.from_keyset(Path(tmp) / "keys", MCHID)
        local = threading.local()

        def http() -> httpx.Client:
            if not hasattr(local, "client"):
                local.client = d.client()
            return local.client

        def create(i: int) -> str:
            start = time.perf_counter()
            answer = http().post(
                "/v1/orders",
                json={"merchant_order_no": f"LAT{i}", "amount_fen": 1000, "description": "bench", "channel": "native"},
            )
            samples["create"].append(time.perf_counter() - start)
            assert answer.status_code == 201, answer.text
            return answer.json()["payment"]["out_trade_no"]

        def callback(item: tuple[int, str]) -> None:
            i, otn = item
            body = wechat.body(
                "TRANSACTION.SUCCESS", paid_transaction(MCHID, DIRECT.appid, otn, 1000, f"42LAT{i:020d}")
            )
            headers = wechat.headers(body)
            start = time.perf_counter()
            answer = http().post("/wechatpay/v3/notify", content=body, headers=headers)
            samples["callback"].append(time.perf_counter() - start)
            assert answer.status_code == 204, answer.text

        with ThreadPoolExecutor(threads) as pool:
            out_trade_nos = list(pool.map(create, range(count)))
            list(pool.map(callback, enumerate(out_trade_nos)))
    return samples


def _followers(ledger: Ledger, url: str) -> dict[str, Follower]:
    return build_views(ledger, ViewDatabase(parse_url(url))).followers


def bill_import(url: str, lines: int) -> dict[str, Any]:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "bench.bill_import", url, str(lines), "known"],  # every line's payment in the journal
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return json.loads(out.stdout)


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
    with connect(parse_url(url), 10) as conn:  # partition 0's schema
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
    parser = argparse.ArgumentParser(prog="python -m bench.micro")
    parser.add_argument("--orders", type=int, default=2000, help="orders per measurement")
    parser.add_argument("--bill-lines", type=int, default=1_000_000, help="lines of the generated bill to import")
    args = parser.parse_args()
    n = args.orders
    rows: list[dict[str, Any]] = []

    def record(name: str, value: float, unit: str, baseline_name: str = "", baseline: float | None = None) -> None:
        row: dict[str, Any] = {"figure": name, "value": round(value, 1), "unit": unit}
        line = f"  {name:<48} {value:>10.0f} {unit:<12}"
        if baseline is not None:
            row |= {
                "baseline": baseline_name,
                "baseline_value": round(baseline, 1),
                "ratio": round(value / baseline, 3),
            }
            line += f" {baseline_name:<26} {baseline:>8.0f}  ratio {value / baseline:.2f}"
        rows.append(row)
        print(line, flush=True)

    print(f"zhangben bench — {n} orders per figure, {platform.machine()}, Python {platform.python_version()}")
    server = ThrowawayPostgres(durable=True)
    server.start()
    try:
        print("PostgreSQL (throwaway cluster, fsync on, loopback):")
        raw = raw_pg_inserts(server.create_database("raw"), n)
        url = server.create_database("bench")
        ledger = open_ledger(url, create_tables=True)
        record(
            "create order (Order+Payment, 1 txn) /s",
            create_orders(ledger, "P", n),
            "orders/s",
            "raw 1-row INSERT txn /s",
            raw,
        )
        record("record payment success /s", pay_orders(ledger, "P", n), "payments/s", "raw 1-row INSERT txn /s", raw)
        with tempfile.TemporaryDirectory() as keys_dir:
            keys_root = Path(keys_dir)
            init_keyset(
                keys_root / "keys", keys_root / "zhangben.toml", "http://127.0.0.1:8000", "http://127.0.0.1:8900"
            )
            service = payment_service(ledger, keys_root)
            callbacks = callback_bodies(ledger, keys_root, "CB", n)
            merchants, keys = service.merchants, service.client.keys
            refunding = RefundService(service, Refunds(service.ledger), Reviews(service.ledger))
            callbacks_app = Callbacks(service, refunding, Audit(service.ledger), service.client.keys)
            arrivals = [Arrival("/wechatpay/v3/notify", "127.0.0.1", h, b) for h, b in callbacks]
            start = time.perf_counter()
            for headers, body in callbacks:
                open_notification(headers, body, merchants, keys)
            per_callback_us = (time.perf_counter() - start) / len(callbacks) * 1e6
            record("verify + decrypt one callback (CPU only)", per_callback_us, "µs")
            record(
                "callbacks ingested (verify, decrypt, apply) /s",
                timed(len(callbacks), lambda i: callbacks_app.handle(arrivals[i])),
                "callbacks/s",
                "raw 1-row INSERT txn /s",
                raw,
            )
        latencies = api_latencies(server, min(n, 400))
        for name, values in latencies.items():
            record(f"{name} through HTTP p50 (4 threads, 2 workers)", percentile(values, 0.5) * 1000, "ms")
            record(f"{name} through HTTP p99 (4 threads, 2 workers)", percentile(values, 0.99) * 1000, "ms")
        hooks = webhook_ingest(server, min(n, 500))
        record("callbacks through HTTP /s, no webhook endpoint (8 senders)", hooks["without"], "callbacks/s")
        record(
            f"callbacks through HTTP /s, a webhook endpoint ({hooks['delivered']} pushed)",
            hooks["with"],
            "callbacks/s",
            "the same without an endpoint",
            hooks["without"],
        )
        rt_settings = Settings(config_path=Path("zhangben.toml"), database_url=url)
        init_database(rt_settings)
        followers = {name: follower for name, follower in _followers(ledger, url).items()}
        for name, follower in followers.items():
            start = time.perf_counter()
            count = follower.rebuild()
            record(
                f"rebuild {name} ({count} events) /s",
                rate(count, time.perf_counter() - start),
                "events/s",
                "raw SELECT scan /s",
                raw_pg_scan(url),
            )
        events, replay_rate = replay(ledger)
        record(f"replay {events} events (decode) /s", replay_rate, "events/s", "raw SELECT scan /s", raw_pg_scan(url))
        ledger.close()

        print("SQLite (WAL, synchronous=FULL):")
        with tempfile.TemporaryDirectory() as tmp:
            raw_sqlite = raw_sqlite_inserts(Path(tmp) / "raw.db", n)
            ledger = open_ledger(f"sqlite:///{tmp}/bench.db", create_tables=True)
            record(
                "create order (Order+Payment, 1 txn) /s",
                create_orders(ledger, "S", n),
                "orders/s",
                "raw 1-row INSERT txn /s",
                raw_sqlite,
            )
            record(
                "record payment success /s",
                pay_orders(ledger, "S", n),
                "payments/s",
                "raw 1-row INSERT txn /s",
                raw_sqlite,
            )
            ledger.close()
        print(f"Reconciliation: import of a generated bill of {args.bill_lines:,} lines (fresh process):")
        for label, url in (("PostgreSQL", server.create_database("bill")), ("SQLite", None)):
            with tempfile.TemporaryDirectory() as tmp:
                result = bill_import(url or f"sqlite:///{tmp}/bill.db", args.bill_lines)
            record(f"{label}: bill import {result['lines']:,} lines", result["seconds"], "s")
            record(f"{label}: bill import peak RSS", result["peak_rss_mib"], "MiB")
    finally:
        server.stop()
    out = Path(__file__).with_name("results-micro.json")
    out.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(),
                "orders": n,
                "machine": platform.machine(),
                "python": sys.version.split()[0],
                "figures": rows,
            },
            indent=2,
        )
    )
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
