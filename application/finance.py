"""Finance: import a day's bill, reconcile it (healing what can be healed), the journal.

The stored bill lines and the journal are read models (``projections``);
this layer names what it needs of them as protocols, and ``bootstrap``
hands over the real ones.  The exports' file writers are ``adapters.exports``.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import Any, Protocol

from application.ledger import Ledger
from application.payments import PaymentService
from domain.bill import DIFFERENCE_KINDS
from domain.errors import PaymentNotFound, RefundNotFound

log = logging.getLogger("zhangben.finance")

RECONCILIATION_COLUMNS = ["kind", "of", "out_trade_no", "transaction_id", "out_refund_no", "bill_fen", "ledger_fen"]
JOURNAL_COLUMNS = ["date", "account", "debit_fen", "credit_fen", "reference", "event", "note"]


class StoredBill(Protocol):
    @property
    def lines(self) -> int: ...
    @property
    def settled_fen(self) -> int: ...
    @property
    def refunded_fen(self) -> int: ...
    @property
    def fee_fen(self) -> int: ...


class BillStore(Protocol):
    """The day's bill lines and their comparison with the ledger's money (``projections.reconciliation``)."""

    def store_bill(
        self, mchid: str, bill_date: date, lines: Iterable[str], progress: Callable[[int], None] | None = None
    ) -> StoredBill: ...

    def report(self, mchid: str, bill_date: date, known_refunds: Callable[[str], bool]) -> dict[str, Any]: ...

    def has_bill(self, mchid: str, bill_date: date) -> bool: ...

    def record_result(self, mchid: str, bill_date: date, matched: int, differences: int) -> None: ...


class JournalBook(Protocol):
    """The double-entry journal (``projections.journal``)."""

    def lines(self, mchid: str, day_from: date, day_to: date) -> list[dict[str, Any]]: ...

    def trial_balance(self, mchid: str, day_from: date, day_to: date) -> dict[str, Any]: ...


class FollowsLog(Protocol):
    """A read model that can be brought up to the log's head before it is read."""

    def bring_up_to_date(self, timeout: float = 5.0) -> None: ...


class Finance:
    def __init__(
        self,
        ledger: Ledger,
        payments: PaymentService,
        bills: BillStore,
        journal: JournalBook,
        journal_follower: FollowsLog,
    ) -> None:
        self.ledger = ledger
        self.payments = payments
        self.bills = bills
        self.journal = journal
        self.journal_follower = journal_follower

    def import_bill(
        self, mchid: str, bill_date: date, content: bytes | None = None, progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Download (or take) the day's bill, store it, record it, reconcile, heal, reconcile again."""
        if content is None:
            merchant = self.payments.merchant(mchid)
            content = self.payments.wechat(merchant).trade_bill(merchant, bill_date)
        result = self.bills.store_bill(mchid, bill_date, _lines(content), progress)
        self.ledger.record_bill_import(
            mchid,
            bill_date,
            result.lines,
            result.settled_fen,
            result.refunded_fen,
            result.fee_fen,
            hashlib.sha1(content).hexdigest(),  # noqa: S324 — WeChat states the bill hash in SHA1
        )
        report = self.report(mchid, bill_date)
        found = report["differences"]
        healed = self._heal(mchid, report)
        if healed:
            report = self.report(mchid, bill_date)
        report["found"] = found  # what the first comparison showed, before the ledger healed itself
        self.bills.record_result(mchid, bill_date, report["matched"], len(report["differences"]))
        report["healed"] = healed
        report["imported"] = {
            "lines": result.lines,
            "settled_fen": result.settled_fen,
            "refunded_fen": result.refunded_fen,
            "fee_fen": result.fee_fen,
        }
        for difference in report["differences"]:
            log.warning("reconciliation %s %s: %s %s", mchid, bill_date, difference["kind"], difference)
        return report

    def _heal(self, mchid: str, report: dict[str, Any]) -> list[str]:
        """WeChat has money the ledger does not: ask WeChat about those orders, the way sync does."""
        merchant = self.payments.merchant(mchid)
        healed = []
        for difference in report["differences"]:
            if difference["kind"] == "missing_in_ledger" and difference["of"] == "payment":
                try:
                    self.ledger.get_payment(difference["out_trade_no"])
                except PaymentNotFound:  # not ours at all: a person must look (it stays a difference)
                    continue
                outcome = self.payments.sync_payment(merchant, difference["out_trade_no"])
                if outcome is not None and outcome.changed:
                    healed.append(difference["out_trade_no"])
            elif difference["kind"] in ("missing_in_ledger", "status_mismatch") and difference["of"] == "refund":
                try:
                    self.payments.sync_refund(mchid, difference["out_refund_no"])
                    healed.append(difference["out_refund_no"])
                except RefundNotFound:
                    continue
        return healed

    def report(self, mchid: str, bill_date: date) -> dict[str, Any]:
        self.journal_follower.bring_up_to_date()

        def known(out_refund_no: str) -> bool:
            try:
                self.ledger.get_refund(mchid, out_refund_no)
            except RefundNotFound:
                return False
            return True

        report = self.bills.report(mchid, bill_date, known)
        report["bill_imported"] = self.bills.has_bill(mchid, bill_date)
        report["counts"] = {
            kind: sum(1 for d in report["differences"] if d["kind"] == kind) for kind in DIFFERENCE_KINDS
        }
        return report

    def journal_report(self, mchid: str, day_from: date, day_to: date) -> dict[str, Any]:
        self.journal_follower.bring_up_to_date()
        return {
            "from": day_from.isoformat(),
            "to": day_to.isoformat(),
            "lines": self.journal.lines(mchid, day_from, day_to),
            "trial_balance": self.journal.trial_balance(mchid, day_from, day_to),
        }


def _lines(content: bytes) -> Iterator[str]:
    return iter(io.StringIO(content.decode("utf-8-sig"), newline=""))
