"""Reconciliation: the day's WeChat bill against the ledger, line by line.

The bill's lines are stored (a re-import of the same day replaces them; with
``COPY`` on PostgreSQL) and matched to the journal's ``ledger_money`` rows with
SQL joins and counts, so a bill of a million lines — also one whose lines the
ledger has never heard of — needs no more memory than a page
(docs/performance.md).  A report carries the counts and the first
``DIFFERENCES_SHOWN`` differences; ``differences()`` pages through all of them
(the exports):

- ``matched``: the same payment (``transaction_id``) or refund (``out_refund_no``) with the same amount;
- ``missing_in_ledger``: WeChat took (or returned) money the ledger never recorded — the dangerous one;
- ``missing_in_bill``: the ledger recorded money on that day that WeChat's bill does not show;
- ``amount_mismatch``: both know it, with different amounts;
- ``status_mismatch``: the bill says a refund succeeded; the ledger knows the refund, not its success.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from adapters.viewdb import ViewDatabase
from adapters.wechatpay.bills import BillLine, BillMismatch, BillSummary, fen_from_mfen, parse_bill
from domain.bill import DIFFERENCE_KINDS, difference_id

DDL = [
    "CREATE TABLE IF NOT EXISTS bill_lines (mchid TEXT NOT NULL, bill_date TEXT NOT NULL, line_no INTEGER NOT NULL, "
    "trade_state TEXT NOT NULL, transaction_id TEXT NOT NULL, out_trade_no TEXT NOT NULL, out_refund_no TEXT NOT NULL, "
    "refund_id TEXT NOT NULL, settled_fen BIGINT NOT NULL, refund_fen BIGINT NOT NULL, fee_mfen BIGINT NOT NULL, "
    "trade_time TEXT NOT NULL, PRIMARY KEY (mchid, bill_date, line_no))",
    "CREATE INDEX IF NOT EXISTS bill_lines_by_transaction ON bill_lines (transaction_id)",
    "CREATE INDEX IF NOT EXISTS bill_lines_by_refund ON bill_lines (out_refund_no)",
    "CREATE TABLE IF NOT EXISTS reconciliation_runs (mchid TEXT NOT NULL, bill_date TEXT NOT NULL, "
    "matched BIGINT NOT NULL, differences BIGINT NOT NULL, PRIMARY KEY (mchid, bill_date))",
    "CREATE TABLE IF NOT EXISTS fund_flow_runs (mchid TEXT NOT NULL, bill_date TEXT NOT NULL, "
    "differences BIGINT NOT NULL, PRIMARY KEY (mchid, bill_date))",
]
COLUMNS = (
    "mchid",
    "bill_date",
    "line_no",
    "trade_state",
    "transaction_id",
    "out_trade_no",
    "out_refund_no",
    "refund_id",
    "settled_fen",
    "refund_fen",
    "fee_mfen",
    "trade_time",
)
PAGE = 5000
DIFFERENCES_SHOWN = 1000  # in a report (and an import's answer); the exports page through all of them
# Which refunds of these out_refund_no the ledger holds at all (a difference is then a status mismatch).
KnownRefunds = Callable[[Sequence[str]], set[str]]

_PAYMENTS = (
    "FROM bill_lines b LEFT JOIN ledger_money m ON m.kind = 'payment' AND m.key = b.transaction_id "
    "WHERE b.mchid = ? AND b.bill_date = ? AND b.trade_state = 'SUCCESS'"
)
_REFUNDS = (
    "FROM bill_lines b LEFT JOIN ledger_money m ON m.kind = 'refund' AND m.key = b.out_refund_no "
    "WHERE b.mchid = ? AND b.bill_date = ? AND b.trade_state = 'REFUND'"
)
# What the ledger recorded that the bill lacks, per kind: an anti-join on the bill's index for that kind
_NOT_IN_BILL = {
    "payment": (
        "FROM ledger_money m WHERE m.mchid = ? AND m.day = ? AND m.kind = 'payment' AND NOT EXISTS (SELECT 1 "
        "FROM bill_lines b WHERE b.transaction_id = m.key AND b.mchid = m.mchid AND b.bill_date = ? "
        "AND b.trade_state = 'SUCCESS')"
    ),
    "refund": (
        "FROM ledger_money m WHERE m.mchid = ? AND m.day = ? AND m.kind = 'refund' AND NOT EXISTS (SELECT 1 "
        "FROM bill_lines b WHERE b.out_refund_no = m.key AND b.mchid = m.mchid AND b.bill_date = ? "
        "AND b.trade_state = 'REFUND')"
    ),
}


@dataclass(frozen=True)
class ImportResult:
    lines: int
    settled_fen: int
    refunded_fen: int
    fee_fen: int


class Reconciliation:
    def __init__(self, db: ViewDatabase, differences_shown: int = DIFFERENCES_SHOWN) -> None:
        self.db = db
        self.differences_shown = differences_shown

    def create_tables(self) -> None:
        for statement in DDL:
            self.db.execute(statement)

    def store_bill(
        self, mchid: str, bill_date: date, lines: Iterable[str], progress: Callable[[int], None] | None = None
    ) -> ImportResult:
        """Replace the day's stored lines with the bill's, in one transaction, streaming (``COPY`` on PostgreSQL)."""
        day = bill_date.isoformat()
        totals = [0, 0, 0, 0]  # lines, settled, refunded, fee (milli-fen)
        summary: list[BillSummary] = []

        def rows() -> Iterator[tuple[Any, ...]]:
            for item in parse_bill(lines):
                if isinstance(item, BillSummary):
                    summary.append(item)
                    return
                line: BillLine = item
                totals[0] += 1
                totals[1] += line.settled_fen
                totals[2] += line.refund_fen
                totals[3] += line.fee_mfen
                if progress and totals[0] % PAGE == 0:
                    progress(totals[0])
                yield (
                    mchid,
                    day,
                    totals[0],
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

        with self.db.transaction():
            self.db.execute("DELETE FROM bill_lines WHERE mchid = ? AND bill_date = ?", (mchid, day))
            self.db.copy_rows("bill_lines", COLUMNS, rows())
            self.db.analyze("bill_lines")  # a day's bulk load: the matching joins plan on fresh statistics
            count, settled, refunded, fee_mfen = totals
            if not summary or (summary[0].lines, summary[0].settled_fen, summary[0].refunded_fen) != (
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

    def record_fund_flow_result(self, mchid: str, bill_date: date, differences: int) -> None:
        self.db.execute(
            "INSERT INTO fund_flow_runs (mchid, bill_date, differences) VALUES (?, ?, ?) "
            "ON CONFLICT (mchid, bill_date) DO UPDATE SET differences = excluded.differences",
            (mchid, bill_date.isoformat(), differences),
        )

    def latest_fund_flow_results(self) -> list[tuple[str, str, int]]:
        """Each merchant's most recent fund flow day: (mchid, date, differences)."""
        return [
            (r[0], r[1], int(r[2]))
            for r in self.db.execute(
                "SELECT r.mchid, r.bill_date, r.differences FROM fund_flow_runs r WHERE r.bill_date = "
                "(SELECT MAX(bill_date) FROM fund_flow_runs x WHERE x.mchid = r.mchid)"
            )
        ]

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

    def report(self, mchid: str, bill_date: date, known_refunds: KnownRefunds) -> dict[str, Any]:
        """The day's matches and the count of each kind of difference (in SQL), with the first differences."""
        day = bill_date.isoformat()
        counts = dict.fromkeys(DIFFERENCE_KINDS, 0)
        matched = 0
        for source in (_PAYMENTS, _REFUNDS):
            row = self.db.execute(
                "SELECT COALESCE(SUM(CASE WHEN m.amount_fen IS NULL THEN 1 ELSE 0 END), 0), "
                f"COALESCE(SUM(CASE WHEN m.amount_fen <> b.{_AMOUNT[source]} THEN 1 ELSE 0 END), 0), "
                f"COALESCE(SUM(CASE WHEN m.amount_fen = b.{_AMOUNT[source]} THEN 1 ELSE 0 END), 0) {source}",
                (mchid, day),
            )[0]
            missing, mismatched, agreed = (int(v) for v in row)
            matched += agreed
            counts["amount_mismatch"] += mismatched
            if source is _PAYMENTS:
                counts["missing_in_ledger"] += missing
        for page in self._missing_refunds(mchid, day):
            known = known_refunds([orn for _, orn, *_ in page])
            counts["status_mismatch"] += sum(1 for _, orn, *_ in page if orn in known)
            counts["missing_in_ledger"] += sum(1 for _, orn, *_ in page if orn not in known)
        counts["missing_in_bill"] = sum(
            int(self.db.execute(f"SELECT COUNT(*) {source}", (mchid, day, day))[0][0])
            for source in _NOT_IN_BILL.values()
        )
        shown_differences = list(
            itertools.islice(self.differences(mchid, bill_date, known_refunds), self.differences_shown)
        )
        return {
            "date": day,
            "mchid": mchid,
            "matched": matched,
            "counts": counts,
            "differences_total": sum(counts.values()),
            "differences": shown_differences,
        }

    def differences(self, mchid: str, bill_date: date, known_refunds: KnownRefunds) -> Iterator[dict[str, Any]]:
        """Every difference of the day, page by page: payments and refunds in bill order, then what the bill lacks."""
        yield from self._payment_differences(mchid, bill_date.isoformat())
        yield from self.refund_differences(mchid, bill_date, known_refunds)
        yield from self._not_in_bill(mchid, bill_date.isoformat())

    def _payment_differences(self, mchid: str, day: str) -> Iterator[dict[str, Any]]:
        for page in self._pages(
            f"SELECT b.line_no, b.transaction_id, b.out_trade_no, b.settled_fen, m.amount_fen {_PAYMENTS} "
            "AND (m.amount_fen IS NULL OR m.amount_fen <> b.settled_fen) AND b.line_no > ? ORDER BY b.line_no LIMIT ?",
            (mchid, day),
        ):
            for _, txn, otn, bill_fen, ledger_fen in page:
                yield _diff(_result(bill_fen, ledger_fen, False), "payment", otn, txn, "", bill_fen, ledger_fen)

    def refund_differences(self, mchid: str, bill_date: date, known_refunds: KnownRefunds) -> Iterator[dict[str, Any]]:
        """The refund lines that differ (what healing asks WeChat about), in bill order."""
        day = bill_date.isoformat()
        for page in self._pages(
            f"SELECT b.line_no, b.out_refund_no, b.out_trade_no, b.transaction_id, b.refund_fen, m.amount_fen {_REFUNDS} "
            "AND (m.amount_fen IS NULL OR m.amount_fen <> b.refund_fen) AND b.line_no > ? ORDER BY b.line_no LIMIT ?",
            (mchid, day),
        ):
            known = known_refunds([row[1] for row in page if row[5] is None])
            for _, orn, otn, txn, bill_fen, ledger_fen in page:
                yield _diff(_result(bill_fen, ledger_fen, orn in known), "refund", otn, txn, orn, bill_fen, ledger_fen)

    def _not_in_bill(self, mchid: str, day: str) -> Iterator[dict[str, Any]]:
        for kind, source in _NOT_IN_BILL.items():
            for page in self._pages(
                f"SELECT m.event_ref, m.key, m.out_trade_no, m.amount_fen {source} "
                "AND m.event_ref > ? ORDER BY m.event_ref LIMIT ?",
                (mchid, day, day),
            ):
                for _, key, otn, ledger_fen in page:
                    payment = kind == "payment"
                    yield _diff(
                        "missing_in_bill", kind, otn, key if payment else "", "" if payment else key, None, ledger_fen
                    )

    def lines(self, mchid: str, bill_date: date, known_refunds: KnownRefunds) -> Iterator[dict[str, Any]]:
        """Every line of the day's bill with what reconciling it found (``matched`` or the difference's kind),
        in bill order, then what the ledger recorded that the bill lacks: the clerk's full list."""
        day = bill_date.isoformat()
        after = 0
        while True:
            rows = self.db.execute(
                "SELECT line_no, trade_time, what, out_trade_no, transaction_id, out_refund_no, bill_fen, fee_mfen, "  # noqa: S608 — fixed fragments
                "ledger_fen FROM ("
                "SELECT b.line_no AS line_no, b.trade_time AS trade_time, 'payment' AS what, b.out_trade_no AS "
                "out_trade_no, b.transaction_id AS transaction_id, '' AS out_refund_no, b.settled_fen AS bill_fen, "
                f"b.fee_mfen AS fee_mfen, m.amount_fen AS ledger_fen {_PAYMENTS} AND b.line_no > ? "
                "UNION ALL SELECT b.line_no, b.trade_time, 'refund', b.out_trade_no, b.transaction_id, b.out_refund_no, "
                f"b.refund_fen, b.fee_mfen, m.amount_fen {_REFUNDS} AND b.line_no > ?) x ORDER BY line_no LIMIT ?",
                (mchid, day, after, mchid, day, after, PAGE),
            )
            unknown = [r[5] for r in rows if r[2] == "refund" and r[8] is None]
            known = known_refunds(unknown) if unknown else set()
            for line_no, trade_time, what, otn, txn, orn, bill_fen, fee, ledger_fen in rows:
                result = _result(bill_fen, ledger_fen, orn in known)
                yield {
                    "id": None if result == "matched" else difference_id(what, txn, otn, orn),
                    "line_no": int(line_no),
                    "trade_time": trade_time,
                    "result": result,
                    "of": what,
                    "out_trade_no": otn,
                    "transaction_id": txn,
                    "out_refund_no": orn,
                    "bill_fen": int(bill_fen),
                    "ledger_fen": None if ledger_fen is None else int(ledger_fen),
                    "fee_mfen": int(fee),
                }
            if len(rows) < PAGE:
                break
            after = rows[-1][0]
        for difference in self._not_in_bill(mchid, day):
            yield {"line_no": None, "trade_time": None, "result": difference.pop("kind"), "fee_mfen": None} | difference

    def bill_totals(self, mchid: str, bill_date: date) -> dict[str, int]:
        """The bill's own sums: trades and their amount, refunds and theirs, the fees (fen, rounded half up)."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(CASE WHEN trade_state = 'SUCCESS' THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN trade_state = 'SUCCESS' THEN settled_fen ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN trade_state = 'REFUND' THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN trade_state = 'REFUND' THEN refund_fen ELSE 0 END), 0), "
            "COALESCE(SUM(fee_mfen), 0) FROM bill_lines WHERE mchid = ? AND bill_date = ?",
            (mchid, bill_date.isoformat()),
        )[0]
        trades, settled, refunds, refunded, fee_mfen = (int(v) for v in row)
        return {
            "trades": trades,
            "settled_fen": settled,
            "refunds": refunds,
            "refunded_fen": refunded,
            "fee_fen": fen_from_mfen(fee_mfen),
        }

    def missing_payments(self, mchid: str, bill_date: date) -> Iterator[list[str]]:
        """Pages of the out_trade_no of payments WeChat took that the ledger has not recorded (what healing asks)."""
        for page in self._pages(
            f"SELECT b.line_no, b.out_trade_no {_PAYMENTS} AND m.amount_fen IS NULL "
            "AND b.line_no > ? ORDER BY b.line_no LIMIT ?",
            (mchid, bill_date.isoformat()),
        ):
            yield [row[1] for row in page]

    def _missing_refunds(self, mchid: str, day: str) -> Iterator[list[tuple[Any, ...]]]:
        yield from self._pages(
            f"SELECT b.line_no, b.out_refund_no {_REFUNDS} AND m.amount_fen IS NULL "
            "AND b.line_no > ? ORDER BY b.line_no LIMIT ?",
            (mchid, day),
        )

    def _pages(self, sql: str, params: tuple[Any, ...]) -> Iterator[list[tuple[Any, ...]]]:
        """Keyset pages: each query continues after the last row's first column."""
        after = 0
        while rows := self.db.execute(sql, (*params, after, PAGE)):
            yield rows
            if len(rows) < PAGE:
                return
            after = rows[-1][0]


_AMOUNT = {_PAYMENTS: "settled_fen", _REFUNDS: "refund_fen"}


def _result(bill_fen: Any, ledger_fen: Any, known_refund: bool) -> str:
    """What reconciling one bill line found: ``matched`` or the kind of difference (the module's docstring)."""
    if ledger_fen is None:  # the ledger has no money for it: a refund it knows has only not heard of the success
        return "status_mismatch" if known_refund else "missing_in_ledger"
    return "matched" if int(ledger_fen) == int(bill_fen) else "amount_mismatch"


def _diff(
    kind: str, what: str, out_trade_no: str, transaction_id: str, out_refund_no: str, bill_fen: Any, ledger_fen: Any
) -> dict[str, Any]:
    return {
        "id": difference_id(what, transaction_id, out_trade_no, out_refund_no),
        "kind": kind,
        "of": what,
        "out_trade_no": out_trade_no,
        "transaction_id": transaction_id,
        "out_refund_no": out_refund_no,
        "bill_fen": None if bill_fen is None else int(bill_fen),
        "ledger_fen": None if ledger_fen is None else int(ledger_fen),
    }
