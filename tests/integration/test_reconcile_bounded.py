"""A day of strangers is reported, not queried one by one; a report shows the first differences and counts all.

The ledger and its read models on a real SQLite file; WeChat is a fake that
records which orders it was asked about (the queries are what is bounded).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from adapters.persistence import parse_url
from adapters.viewdb import ViewDatabase
from application.bills import Bills
from application.finance import Finance
from application.ledger import Ledger
from application.orders import Orders
from bootstrap.ledger import open_ledger
from domain.requests import OrderTerms
from projections.core import EventLog
from projections.journal import Journal
from projections.reconciliation import Reconciliation
from sandbox.bills import HEADER, SUMMARY_HEADER
from sandbox.keyset import DIRECT

DAY = date(2026, 11, 22)


class AskedWechat:
    """Stands in for RefundService (and its PaymentService) where healing calls them: records each query,
    WeChat knows nothing new."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.payments = self

    def merchant(self, mchid: str) -> str:
        return mchid

    def sync_payment(self, merchant: Any, out_trade_no: str) -> None:
        self.asked.append(out_trade_no)

    def sync_refund(self, mchid: str, out_refund_no: str) -> None:
        self.asked.append(out_refund_no)


class UpToDate:
    def bring_up_to_date(self, timeout: float = 5.0) -> None:
        pass


def write_bill(path: Path, out_trade_nos: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER + "\r\n")
        for i, otn in enumerate(out_trade_nos):
            out.write(
                f"`2026-11-22 10:00:00,`{DIRECT.appid},`{DIRECT.mchid},`0,`,`42{i:026d},`{otn},`oPayer,"
                "`NATIVE,`SUCCESS,`OTHERS,`CNY,`10.00,`0.00,`0,`0,`0.00,`0.00,`,`,`goods,`,`0.06000,`0.60%,"
                "`10.00,`0.00,`\r\n"
            )
        n = len(out_trade_nos)
        out.write(SUMMARY_HEADER + "\r\n")
        out.write(f"`{n},`{n * 10}.00,`0.00,`0.00,`{n * 6 / 100:.5f},`{n * 10}.00,`0.00\r\n")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    app = open_ledger(f"sqlite:///{tmp_path}/ledger.db", create_tables=True)
    yield app
    app.close()


def test_strangers_are_counted_not_queried_and_queries_are_bounded(ledger: Ledger, tmp_path: Path) -> None:
    own = [
        Orders(ledger).create_order(DIRECT.mchid, f"OWN-{i}", OrderTerms(1000, "x", "native"))[1].out_trade_no
        for i in range(3)
    ]
    strangers = [f"STRANGER{i:05d}" for i in range(500)]
    bill = tmp_path / "bill.csv"
    write_bill(bill, strangers[:250] + own + strangers[250:])
    db = ViewDatabase(parse_url(f"sqlite:///{tmp_path}/ledger.db"))
    journal = Journal(EventLog(ledger.recorder, ledger.mapper, ledger.repository), db)
    journal.create_tables()
    bills = Reconciliation(db, differences_shown=10)
    bills.create_tables()
    wechat = AskedWechat()
    finance = Finance(Bills(ledger), wechat, bills, journal, UpToDate(), heal_queries=2)  # type: ignore[arg-type]

    report = finance.import_bill(DIRECT.mchid, DAY, bill)

    assert report["imported"]["lines"] == 503
    assert report["differences_total"] == 503 and report["counts"]["missing_in_ledger"] == 503
    assert len(report["differences"]) == 10  # the first ones, in bill order
    assert [d["out_trade_no"] for d in report["differences"]] == strangers[:10]
    # only the ledger's own orders are asked about, and no more than the bound; strangers never
    assert wechat.asked == own[:2] and report["not_queried"] == 1
    # every difference is still there for the export, streamed
    assert sum(1 for _ in finance.differences(DIRECT.mchid, DAY)) == 503
    assert bills.has_bill(DIRECT.mchid, DAY)
    db.close()
