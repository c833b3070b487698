"""Finance: import a day's bill, reconcile it (healing what can be healed), the journal, exports."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from domain.errors import PaymentNotFound, RefundNotFound
from projections.core import Follower
from projections.journal import Journal
from projections.reconciliation import KINDS, Reconciliation

log = logging.getLogger("zhangben.finance")

RECONCILIATION_COLUMNS = ["kind", "of", "out_trade_no", "transaction_id", "out_refund_no", "bill_fen", "ledger_fen"]
JOURNAL_COLUMNS = ["date", "account", "debit_fen", "credit_fen", "reference", "event"]


class Finance:
    def __init__(self, runtime: Any) -> None:
        self.rt = runtime

    @property
    def journal(self) -> Journal:
        return self.rt.journal

    @property
    def reconciliation(self) -> Reconciliation:
        return self.rt.reconciliation

    @property
    def journal_follower(self) -> Follower:
        return self.rt.followers["journal"]

    def import_bill(self, mchid: str, bill_date: date, content: bytes | None = None,
                    progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Download (or take) the day's bill, store it, record it, reconcile, heal, reconcile again."""
        if content is None:
            content = self.rt.client.trade_bill(self.rt.client.merchant(mchid), bill_date)
        result = self.reconciliation.store_bill(mchid, bill_date, _lines(content), progress)
        self.rt.ledger.record_bill_import(mchid, bill_date, result.lines, result.settled_fen, result.refunded_fen,
                                          result.fee_fen, hashlib.sha1(content).hexdigest())  # noqa: S324
        report = self.report(mchid, bill_date)
        found = report["differences"]
        healed = self._heal(mchid, report)
        if healed:
            report = self.report(mchid, bill_date)
        report["found"] = found  # what the first comparison showed, before the ledger healed itself
        self.reconciliation.record_result(mchid, bill_date, report["matched"], len(report["differences"]))
        report["healed"] = healed
        report["imported"] = {"lines": result.lines, "settled_fen": result.settled_fen,
                              "refunded_fen": result.refunded_fen, "fee_fen": result.fee_fen}
        for difference in report["differences"]:
            log.warning("reconciliation %s %s: %s %s", mchid, bill_date, difference["kind"], difference)
        return report

    def _heal(self, mchid: str, report: dict[str, Any]) -> list[str]:
        """WeChat has money the ledger does not: ask WeChat about those orders, the way sync does."""
        merchant = self.rt.client.merchant(mchid)
        healed = []
        for difference in report["differences"]:
            if difference["kind"] == "missing_in_ledger" and difference["of"] == "payment":
                try:
                    self.rt.ledger.get_payment(difference["out_trade_no"])
                except PaymentNotFound:  # not ours at all: a person must look (it stays a difference)
                    continue
                outcome = self.rt.service.sync_payment(merchant, difference["out_trade_no"])
                if outcome is not None and outcome.changed:
                    healed.append(difference["out_trade_no"])
            elif difference["kind"] in ("missing_in_ledger", "status_mismatch") and difference["of"] == "refund":
                try:
                    self.rt.service.sync_refund(mchid, difference["out_refund_no"])
                    healed.append(difference["out_refund_no"])
                except RefundNotFound:
                    continue
        return healed

    def report(self, mchid: str, bill_date: date) -> dict[str, Any]:
        self.journal_follower.bring_up_to_date()

        def known(out_refund_no: str) -> bool:
            try:
                self.rt.ledger.get_refund(mchid, out_refund_no)
            except RefundNotFound:
                return False
            return True

        report = self.reconciliation.report(mchid, bill_date, known)
        report["bill_imported"] = self.reconciliation.has_bill(mchid, bill_date)
        report["counts"] = {kind: sum(1 for d in report["differences"] if d["kind"] == kind) for kind in KINDS}
        return report

    def journal_report(self, mchid: str, day_from: date, day_to: date) -> dict[str, Any]:
        self.journal_follower.bring_up_to_date()
        return {"from": day_from.isoformat(), "to": day_to.isoformat(),
                "lines": self.journal.lines(mchid, day_from, day_to),
                "trial_balance": self.journal.trial_balance(mchid, day_from, day_to)}


def _lines(content: bytes) -> Iterator[str]:
    return iter(io.StringIO(content.decode("utf-8-sig"), newline=""))


# -- exports ---------------------------------------------------------------------------------

def to_csv(columns: list[str], rows: Iterable[dict[str, Any]]) -> bytes:
    """UTF-8 with a BOM, so Excel opens the Chinese text."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return "\ufeff".encode() + buffer.getvalue().encode("utf-8")


def to_xlsx(sheet: str, columns: list[str], rows: Iterable[dict[str, Any]]) -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    ws = book.create_sheet(sheet)
    ws.append(columns)
    for row in rows:
        ws.append([row.get(c) for c in columns])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def export(kind: str, fmt: str, columns: list[str], rows: list[dict[str, Any]]) -> bytes:
    if fmt == "csv":
        return to_csv(columns, rows)
    if fmt == "xlsx":
        return to_xlsx(kind, columns, rows)
    raise ValueError(f"unknown format {fmt}")


def write_export(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
