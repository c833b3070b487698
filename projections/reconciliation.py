"""Reconciliation: the day's WeChat bill against the ledger, line by line.

The bill's lines are stored (a re-import of the same day replaces them) and
matched to the journal's ``ledger_money`` rows with SQL joins, so a bill of a
million lines needs no more memory than a batch:

- ``matched``: the same payment (``transaction_id``) or refund (``out_refund_no``) with the same amount;
- ``missing_in_ledger``: WeChat took (or returned) money the ledger never recorded — the dangerous one;
- ``missing_in_bill``: the ledger recorded money on that day that WeChat's bill does not show;
- ``amount_mismatch``: both know it, with different amounts;
- ``status_mismatch``: the bill says a refund succeeded; the ledger knows the refund, not its success.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from adapters.viewdb import ViewDatabase
from adapters.wechatpay.bills import BillLine, BillMismatch, BillSummary, fen_from_mfen, parse_bill

DDL = [
    "CREATE TABLE IF NOT EXISTS bill_lines (mchid TEXT NOT NULL, bill_date TEXT NOT NULL, line_no INTEGER NOT NULL, "
    "trade_state TEXT NOT NULL, transaction_id TEXT NOT NULL, out_trade_no TEXT NOT NULL, out_refund_no TEXT NOT NULL, "
    "refund_id TEXT NOT NULL, settled_fen BIGINT NOT NULL, refund_fen BIGINT NOT NULL, fee_mfen BIGINT NOT NULL, "
    "trade_time TEXT NOT NULL, PRIMARY KEY (mchid, bill_date, line_no))",
    "CREATE INDEX IF NOT EXISTS bill_lines_by_transaction ON bill_lines (transaction_id)",
    "CREATE INDEX IF NOT EXISTS bill_lines_by_refund ON bill_lines (out_refund_no)",
    "CREATE TABLE IF NOT EXISTS reconciliation_runs (mchid TEXT NOT NULL, bill_date TEXT NOT NULL, "
    "matched BIGINT NOT NULL, differences BIGINT NOT NULL, PRIMARY KEY (mchid, bill_date))",
]
INSERT = (
    "INSERT INTO bill_lines (mchid, bill_date, line_no, trade_state, transaction_id, out_trade_no, out_refund_no, "
    "refund_id, settled_fen, refund_fen, fee_mfen, trade_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
BATCH = 5000


@dataclass(frozen=True)
class ImportResult:
    lines: int
    settled_fen: int
    refunded_fen: int
    fee_fen: int


class Reconciliation:
    def __init__(self, db: ViewDatabase) -> None:
        self.db = db

    def create_tables(self) -> None:
        for statement in DDL:
            self.db.execute(statement)

    def store_bill(
        self, mchid: str, bill_date: date, lines: Iterable[str], progress: Callable[[int], None] | None = None
    ) -> ImportResult:
        """Replace the day's stored lines with the bill's, in one transaction, streaming."""
        day = bill_date.isoformat()
        count, settled, refunded, fee_mfen = 0, 0, 0, 0
        summary: BillSummary | None = None
        batch: list[tuple[Any, ...]] = []
        with self.db.transaction():
            self.db.execute("DELETE FROM bill_lines WHERE mchid = ? AND bill_date = ?", (mchid, day))
            for item in parse_bill(lines):
                if isinstance(item, BillSummary):
                    summary = item
                    break
                line: BillLine = item
                count += 1
                settled += line.settled_fen
                refunded += line.refund_fen
                fee_mfen += line.fee_mfen
                batch.append(
                    (
                        mchid,
                        day,
                        count,
                        line.trade_state,
                        line.transaction_id,
                        line.out_trade_no,
                        line.out_refund_no,
                        line.refund_id,
                        line.settled_fen,
                        line.refund_fen,
                        line.fee_mfen,
                        line.trade_time,
                    )
                )
                if len(batch) >= BATCH:
                    self.db.executemany(INSERT, batch)
                    batch.clear()
                    if progress:
                        progress(count)
            if batch:
                self.db.executemany(INSERT, batch)
            if summary is None or (summary.lines, summary.settled_fen, summary.refunded_fen) != (
                count,
                settled,
                refunded,
            ):
                raise BillMismatch(f"the bill's summary does not add up to its {count} lines: the file is damaged")
        if progress:
            progress(count)
        return ImportResult(count, settled, refunded, fen_from_mfen(fee_mfen))

    def record_result(self, mchid: str, bill_date: date, matched: int, differences: int) -> None:
        self.db.execute(
            "INSERT INTO reconciliation_runs (mchid, bill_date, matched, differences) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (mchid, bill_date) DO UPDATE SET matched = excluded.matched, differences = excluded.differences",
            (mchid, bill_date.isoformat(), matched, differences),
        )

    def latest_results(self) -> list[tuple[str, str, int, int]]:
        """Each merchant's most recent reconciled day: (mchid, date, matched, differences)."""
        return [
            (r[0], r[1], int(r[2]), int(r[3]))
            for r in self.db.execute(
                "SELECT r.mchid, r.bill_date, r.matched, r.differences FROM reconciliation_runs r WHERE r.bill_date = "
                "(SELECT MAX(bill_date) FROM reconciliation_runs x WHERE x.mchid = r.mchid)"
            )
        ]

    def has_bill(self, mchid: str, bill_date: date) -> bool:
        return bool(
            self.db.execute(
                "SELECT 1 FROM bill_lines WHERE mchid = ? AND bill_date = ? LIMIT 1", (mchid, bill_date.isoformat())
            )
        )

    def report(self, mchid: str, bill_date: date, known_refunds: Callable[[str], bool]) -> dict[str, Any]:
        """The day's matches and differences; ``known_refunds`` says whether the ledger has a refund at all."""
        day = bill_date.isoformat()
        matched, differences = 0, []
        for txn, otn, bill_fen, ledger_fen in self.db.execute(
            "SELECT b.transaction_id, b.out_trade_no, b.settled_fen, m.amount_fen FROM bill_lines b "
            "LEFT JOIN ledger_money m ON m.kind = 'payment' AND m.key = b.transaction_id "
            "WHERE b.mchid = ? AND b.bill_date = ? AND b.trade_state = 'SUCCESS' ORDER BY b.line_no",
            (mchid, day),
        ):
            if ledger_fen is None:
                differences.append(_diff("missing_in_ledger", "payment", otn, txn, "", bill_fen, None))
            elif int(ledger_fen) != int(bill_fen):
                differences.append(_diff("amount_mismatch", "payment", otn, txn, "", bill_fen, ledger_fen))
            else:
                matched += 1
        for orn, otn, txn, bill_fen, ledger_fen in self.db.execute(
            "SELECT b.out_refund_no, b.out_trade_no, b.transaction_id, b.refund_fen, m.amount_fen FROM bill_lines b "
            "LEFT JOIN ledger_money m ON m.kind = 'refund' AND m.key = b.out_refund_no "
            "WHERE b.mchid = ? AND b.bill_date = ? AND b.trade_state = 'REFUND' ORDER BY b.line_no",
            (mchid, day),
        ):
            if ledger_fen is None:
                kind = "status_mismatch" if known_refunds(orn) else "missing_in_ledger"
                differences.append(_diff(kind, "refund", otn, txn, orn, bill_fen, None))
            elif int(ledger_fen) != int(bill_fen):
                differences.append(_diff("amount_mismatch", "refund", otn, txn, orn, bill_fen, ledger_fen))
            else:
                matched += 1
        for kind, key, otn, ledger_fen in self.db.execute(
            "SELECT m.kind, m.key, m.out_trade_no, m.amount_fen FROM ledger_money m WHERE m.mchid = ? AND m.day = ? "
            "AND NOT EXISTS (SELECT 1 FROM bill_lines b WHERE b.mchid = m.mchid AND b.bill_date = ? AND ("
            "(m.kind = 'payment' AND b.trade_state = 'SUCCESS' AND b.transaction_id = m.key) OR "
            "(m.kind = 'refund' AND b.trade_state = 'REFUND' AND b.out_refund_no = m.key))) "
            "ORDER BY m.event_ref",
            (mchid, day, day),
        ):
            differences.append(
                _diff(
                    "missing_in_bill",
                    kind,
                    otn,
                    key if kind == "payment" else "",
                    key if kind == "refund" else "",
                    None,
                    ledger_fen,
                )
            )
        return {"date": day, "mchid": mchid, "matched": matched, "differences": differences}


def _diff(
    kind: str, what: str, out_trade_no: str, transaction_id: str, out_refund_no: str, bill_fen: Any, ledger_fen: Any
) -> dict[str, Any]:
    return {
        "kind": kind,
        "of": what,
        "out_trade_no": out_trade_no,
        "transaction_id": transaction_id,
        "out_refund_no": out_refund_no,
        "bill_fen": None if bill_fen is None else int(bill_fen),
        "ledger_fen": None if ledger_fen is None else int(ledger_fen),
    }
