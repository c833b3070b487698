"""The console's pages on the embedded default (SQLite) with 10,000 orders: each must load in under 200 ms.

``python -m bench.console [--orders N]``: seeds the orders straight into the
ledger (every tenth paid, every hundredth paid twice and so in review), starts
``zhangben serve`` with the sandbox as ``make serve`` does, logs in as each
role and times each page 20 times through HTTP (the server's answer, as a
browser's first byte and body).  Prints p50 and p95 per page with met / NOT met;
``make bench`` runs it too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from application.orders import Orders
from bootstrap.ledger import open_ledger
from bootstrap.settings import load_settings
from bootstrap.wiring import build_runtime
from domain.notices import TransactionNotice
from domain.requests import OrderTerms
from sandbox.keyset import DIRECT
from zhangben.deployment import deploy

GOAL_MS = 200
ROUNDS = 20


def seed(database_url: str, orders: int) -> None:
    ledger = open_ledger(database_url)
    now = datetime.now(UTC)
    try:
        for i in range(orders):
            no = f"CON{i:06d}"
            _, payment = Orders(ledger).create_order(DIRECT.mchid, no, OrderTerms(1000 + i, "奶茶", "native"))
            if i % 100 == 0:  # a second attempt paid too: a duplicate payment, in review
                second = Orders(ledger).start_payment(
                    ledger.get_order(DIRECT.mchid, no), None, None, lambda _c: DIRECT.appid
                )
                Orders(ledger).record_payment_success(
                    TransactionNotice.paid(second.out_trade_no, f"43{i:026d}", 1000 + i, now, payer_total_fen=1000 + i),
                    "query",
                )
            if i % 10 == 0:
                Orders(ledger).record_payment_success(
                    TransactionNotice.paid(
                        payment.out_trade_no, f"42{i:026d}", 1000 + i, now, payer_total_fen=1000 + i
                    ),
                    "query",
                )
    finally:
        ledger.close()


def timed(http: httpx.Client, path: str) -> list[float]:
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        answer = http.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return sorted(samples)


def measure(orders: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url = f"sqlite:///{root}/ledger.db"
        with deploy(root, url) as d:  # keys, config, db init, the sandbox and `zhangben serve`
            started = time.monotonic()
            seed(url, orders)
            rt = build_runtime(
                load_settings({"ZHANGBEN_CONFIG": str(root / "zhangben.toml"), "ZHANGBEN_DATABASE_URL": url})
            )
            try:
                for follower in rt.followers.values():
                    follower.catch_up()
            finally:
                rt.close()
            print(f"seeded {orders:,} orders in {time.monotonic() - started:.0f} s")
            pages = {
                "merchant": [
                    "/console",
                    "/console?status=PAID",
                    f"/console/orders/CON{orders // 2:06d}",
                    "/console/reviews",
                ],
                "support": ["/console/orders/CON000100"],
                "auditor": ["/console/orders/CON000100", "/console/refused"],
                "finance": ["/console/reconciliation", "/console/exports"],
            }
            for role, paths in pages.items():
                with httpx.Client(base_url=d.ledger, timeout=30) as http:
                    assert http.post("/console/login", data={"key": d.keys[role]}).status_code == 303
                    for path in paths:
                        samples = timed(http, path)
                        p50, p95 = samples[len(samples) // 2], samples[int(len(samples) * 0.95) - 1]
                        rows.append(
                            {
                                "role": role,
                                "page": path,
                                "p50_ms": round(p50, 1),
                                "p95_ms": round(p95, 1),
                                "met": p95 < GOAL_MS,
                            }
                        )
                        print(
                            f"  {role:<9} {path:<34} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  {'met' if p95 < GOAL_MS else 'NOT met'} (< {GOAL_MS} ms)"
                        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000, help="orders to seed (default 10,000)")
    args = parser.parse_args()
    rows = measure(args.orders)
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
