"""Finance: import a day's bill, reconcile it (healing what can be healed), the journal.

The stored bill lines and the journal are read models (``projections``);
this layer names what it needs of them as protocols, and ``bootstrap``
hands over the real ones.  The exports' file writers are ``adapters.exports``.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from adapters.wechatpay.config import Merchant
from adapters.wechatpay.errors import WechatPayError
from adapters.wechatpay.evidence import Exchange, captured
from adapters.wechatpay.fundflow import parse_fund_flow
from adapters.wechatpay.gateway import Gateway
from application.bills import Bills
from application.refunding import RefundService
from domain.bill import BillSummary, DailyBill
from domain.errors import InvalidInput, NotFound, RefundNotFound

log = logging.getLogger("zhangben.finance")


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

    def report(
        self, mchid: str, bill_date: date, known_refunds: Callable[[Sequence[str]], set[str]]
    ) -> dict[str, Any]: ...

    def differences(
        self, mchid: str, bill_date: date, known_refunds: Callable[[Sequence[str]], set[str]]
    ) -> Iterator[dict[str, Any]]: ...

    def refund_differences(
        self, mchid: str, bill_date: date, known_refunds: Callable[[Sequence[str]], set[str]]
    ) -> Iterator[dict[str, Any]]: ...

    def missing_payments(self, mchid: str, bill_date: date) -> Iterator[list[str]]: ...

    def lines(
        self, mchid: str, bill_date: date, known_refunds: Callable[[Sequence[str]], set[str]]
    ) -> Iterator[dict[str, Any]]: ...

    def bill_totals(self, mchid: str, bill_date: date) -> dict[str, int]: ...

    def has_bill(self, mchid: str, bill_date: date) -> bool: ...

    def record_result(self, mchid: str, bill_date: date, matched: int, differences: int) -> None: ...

    def record_fund_flow_result(self, mchid: str, bill_date: date, differences: int) -> None: ...


class BillFiles(Protocol):
    """Every imported bill file, kept compressed under its SHA-1 (``adapters.bill_archive``)."""

    def keep(self, mchid: str, bill_date: date, sha1: str, content: bytes | Path, now: datetime) -> None: ...

    def has(self, mchid: str, bill_date: date, sha1: str) -> bool: ...

    def lines(self, mchid: str, bill_date: date, sha1: str) -> AbstractContextManager[Iterator[str]]: ...


class JournalBook(Protocol):
    """The double-entry journal (``projections.journal``)."""

    def lines(self, mchid: str, day_from: date, day_to: date) -> list[dict[str, Any]]: ...

    def trial_balance(self, mchid: str, day_from: date, day_to: date) -> dict[str, Any]: ...

    def balance_movements(self, mchid: str, day: date) -> dict[str, int]: ...


class FollowsLog(Protocol):
    """A read model that can be brought up to the log's head before it is read."""

    def bring_up_to_date(self, timeout: float = 5.0) -> None: ...


class Finance:
    def __init__(
        self,
        days: Bills,
        refunding: RefundService,
        bills: BillStore,
        journal: JournalBook,
        journal_follower: FollowsLog,
        heal_queries: int = 200,
        archive: BillFiles | None = None,
    ) -> None:
        self.archive = archive  # the bill files, kept for a rebuild (None: not kept)
        self.heal_queries = heal_queries  # queries at WeChat per import; the rest are left as differences
        self.days = days  # the days' bills as events (``DailyBill``)
        self.ledger = days.ledger  # which numbers are the ledger's own
        self.refunding = refunding  # refunds asked about again when the bill shows WeChat's word on them
        self.payments = refunding.payments  # the merchants, and payments asked about again
        self.bills = bills
        self.journal = journal
        self.journal_follower = journal_follower

    def import_bill(
        self,
        mchid: str,
        bill_date: date,
        content: bytes | Path | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Download (or take) the day's bill, store it, record it, reconcile, heal, reconcile again.

        A bill given as a file is read streaming (a million lines need no more
        memory than a page); WeChat's download arrives whole.
        """
        calls: list[Exchange] = []
        if content is None:
            content, calls = self._download(mchid, bill_date, lambda wechat, m: wechat.trade_bill(m, bill_date))
        with _opened(content) as lines:
            result = self.bills.store_bill(mchid, bill_date, lines, progress)
        sha1 = _sha1(content)
        if self.archive is not None:  # the file itself, for an auditor and for a rebuild of these tables
            self.archive.keep(mchid, bill_date, sha1, content, self.ledger.clock())
        summary = BillSummary(result.lines, result.settled_fen, result.refunded_fen, result.fee_fen, sha1)
        self.days.record_bill_import(mchid, bill_date, summary, _data(calls))
        report = self.report(mchid, bill_date)
        found = report["differences"]
        healed, not_queried = self._heal(mchid, bill_date) if report["differences_total"] else ([], 0)
        if healed:
            report = self.report(mchid, bill_date)
        report["found"] = found  # what the first comparison showed, before the ledger healed itself
        self.bills.record_result(mchid, bill_date, report["matched"], report["differences_total"])
        report["healed"] = healed
        report["not_queried"] = not_queried
        report["imported"] = {
            "lines": result.lines,
            "settled_fen": result.settled_fen,
            "refunded_fen": result.refunded_fen,
            "fee_fen": result.fee_fen,
        }
        if report["differences_total"]:
            log.warning(
                "reconciliation %s %s: %d differences %s (first: %s)",
                mchid,
                bill_date,
                report["differences_total"],
                report["counts"],
                report["differences"][:3],
            )
        return report

    def _download(
        self, mchid: str, bill_date: date, fetch: Callable[[Gateway, Merchant], bytes]
    ) -> tuple[bytes, list[Exchange]]:
        """A bill file from WeChat with the requests made for it; a refusal's requests are kept on the day's bill
        before the error goes on."""
        merchant = self.payments.merchant(mchid)
        with captured() as calls:
            try:
                return fetch(self.payments.wechat(merchant), merchant), calls
            except WechatPayError:
                self.ledger.record_wechat_calls(DailyBill.create_id(mchid, bill_date.isoformat()), _data(calls))
                raise

    def rebuild_reconciliation(self, progress: Callable[[int], None] | None = None) -> dict[str, list[str]]:
        """The reconciliation's tables again, from the kept bill files and the event log (no call to WeChat).

        Each imported day's latest file (the ``sha1`` of its last ``DailyBill.Imported``) is stored again and
        compared with the ledger as it stands; a day whose file was never kept (imported before bills were
        kept) is left as it was, and named.
        """
        rebuilt: list[str] = []
        missing: list[str] = []
        for bill in self.days.daily_bills():
            if not bill.imports:
                continue  # a day of which only the fund flow bill was imported
            name = f"{bill.mchid} {bill.bill_date}"
            if self.archive is None or not self.archive.has(bill.mchid, bill.day, bill.sha1):
                missing.append(name)
                continue
            with self.archive.lines(bill.mchid, bill.day, bill.sha1) as lines:
                self.bills.store_bill(bill.mchid, bill.day, lines)
            report = self.report(bill.mchid, bill.day)
            self.bills.record_result(bill.mchid, bill.day, report["matched"], report["differences_total"])
            rebuilt.append(name)
            if progress:
                progress(len(rebuilt))
        return {"rebuilt": rebuilt, "not_kept": missing}

    # -- the fund flow bill (资金账单): what reached the balance and the bank ---------------------------------

    def import_fund_flow(self, mchid: str, bill_date: date, content: bytes | Path | None = None) -> dict[str, Any]:
        """Download (or take) the day's fund flow bill, keep it, record its figures, and compare them with the
        journal's WeChat balance (``fund_flow_report``).  Import the day's trade bill first: its fee and its
        settlement are what the journal books."""
        calls: list[Exchange] = []
        if content is None:
            content, calls = self._download(mchid, bill_date, lambda wechat, m: wechat.fund_flow_bill(m, bill_date))
        with _opened(content) as lines:
            day = parse_fund_flow(lines)
        if day.closing_fen is None:
            raise InvalidInput("bill", "the fund flow bill has no movement")
        sha1 = _sha1(content)
        if self.archive is not None:
            self.archive.keep(mchid, bill_date, sha1, content, self.ledger.clock())
        figures = day.totals() | {"lines": day.lines, "closing_fen": day.closing_fen}
        self.days.record_fund_flow_import(mchid, bill_date, figures, sha1, _data(calls))
        return self.fund_flow_report(mchid, bill_date)

    def fund_flow_report(self, mchid: str, bill_date: date) -> dict[str, Any]:
        """The day's fund flow against the journal's WeChat balance (docs/finance.md, "The fund flow bill").

        Each category — sales in, refunds out, fees, settlement to the bank, anything else — is compared; the
        closing balance too, and what the categories do not explain of its difference is ``opening_balance``
        (a difference carried from an earlier day).
        """
        bill = self.days.daily_bill(mchid, bill_date)
        if bill is None or bill.fund_flow is None:
            raise NotFound(f"no fund flow bill imported for {bill_date}: import it first")
        self.journal_follower.bring_up_to_date()
        journal = self.journal.balance_movements(mchid, bill_date)
        wechat = {k: int(v) for k, v in bill.fund_flow.items() if k != "sha1"}
        differences = []
        sign = {"income_fen": 1, "refunds_fen": -1, "fees_fen": -1, "settlement_fen": -1, "other_fen": 1}
        explained = 0
        for key, direction in sign.items():
            gap = wechat[key] - journal[key]
            explained += direction * gap
            if gap:
                differences.append(_fund_difference(key.removesuffix("_fen"), wechat[key], journal[key]))
        opening_gap = (wechat["closing_fen"] - journal["closing_fen"]) - explained
        if opening_gap:
            opening_wechat = wechat["closing_fen"] - sum(d * wechat[k] for k, d in sign.items())
            opening_journal = journal["closing_fen"] - sum(d * journal[k] for k, d in sign.items())
            differences.append(_fund_difference("opening_balance", opening_wechat, opening_journal))
        self.bills.record_fund_flow_result(mchid, bill_date, len(differences))
        return {
            "mchid": mchid,
            "date": bill_date.isoformat(),
            "lines": wechat["lines"],
            "wechat": {k: v for k, v in wechat.items() if k != "lines"},
            "journal": journal,
            "differences": differences,
        }

    def fund_flow_if_imported(self, mchid: str, bill_date: date) -> dict[str, Any] | None:
        """The day's fund flow report, or None when no fund flow bill of that day was imported (the exports)."""
        bill = self.days.daily_bill(mchid, bill_date)
        return self.fund_flow_report(mchid, bill_date) if bill is not None and bill.fund_flow is not None else None

    def _heal(self, mchid: str, bill_date: date) -> tuple[list[str], int]:
        """WeChat has money the ledger does not: ask WeChat about those of its own orders, the way sync does.

        Batched and bounded: which out_trade_no / out_refund_no the ledger
        issued at all is one query per page (lines of strangers are reported,
        never queried), and at most ``heal_queries`` go to WeChat per import;
        the rest stay differences (``not_queried``) for the next run or a person.
        """
        merchant = self.payments.merchant(mchid)
        healed: list[str] = []
        queries = not_queried = 0
        for page in self.bills.missing_payments(mchid, bill_date):
            ours = self.ledger.known_payments(page)
            for out_trade_no in (otn for otn in page if otn in ours):  # in the bill's order
                if queries >= self.heal_queries:
                    not_queried += 1
                    continue
                queries += 1
                outcome = self.payments.sync_payment(merchant, out_trade_no)
                if outcome is not None and outcome.changed:
                    healed.append(out_trade_no)
        known = partial(self.ledger.known_refunds, mchid)
        for difference in self.bills.refund_differences(mchid, bill_date, known):
            if difference["kind"] != "status_mismatch":
                continue  # an amount a person must look at, or (missing_in_ledger) not a refund the ledger made
            if queries >= self.heal_queries:
                not_queried += 1
                continue
            queries += 1
            try:
                self.refunding.sync_refund(mchid, difference["out_refund_no"])
                healed.append(difference["out_refund_no"])
            except RefundNotFound:
                continue
        if not_queried:
            log.warning(
                "reconciliation %s %s: %d of the ledger's own orders not queried at WeChat (limit %d per import)",
                mchid,
                bill_date,
                not_queried,
                self.heal_queries,
            )
        return healed, not_queried

    def report(self, mchid: str, bill_date: date) -> dict[str, Any]:
        """The counts, the matched lines and the first differences (``differences()`` gives every one).

        Each difference says whether finance has acknowledged it; the day is
        ``closed`` when every difference it still has is acknowledged.
        """
        self.journal_follower.bring_up_to_date()
        known = partial(self.ledger.known_refunds, mchid)
        report = self.bills.report(mchid, bill_date, known)
        report["bill_imported"] = self.bills.has_bill(mchid, bill_date)
        acknowledged = self.days.bill_acknowledgements(mchid, bill_date)
        for difference in report["differences"]:
            difference["acknowledged"] = acknowledged.get(difference["id"])
        differences = self.bills.differences(mchid, bill_date, known) if acknowledged else iter(())
        explained = sum(1 for d in differences if d["id"] in acknowledged)
        report["acknowledged_total"] = explained
        report["closed"] = report["bill_imported"] and explained == report["differences_total"]
        return report

    def acknowledge(self, mchid: str, bill_date: date, difference_id: str, note: str, by: str) -> dict[str, Any]:
        """Finance explains one difference of the day (idempotent); the answer says whether the day is closed."""
        if not note.strip():
            raise InvalidInput("note", "say why in the note: it is what an auditor reads")
        found = next((d for d in self.differences(mchid, bill_date) if d["id"] == difference_id), None)
        if found is None:
            raise NotFound(f"no difference {difference_id!r} in {mchid}'s reconciliation of {bill_date}")
        bill = self.days.acknowledge_difference(mchid, bill_date, difference_id, note, by)
        report = self.report(mchid, bill_date)
        return {
            "difference": found | {"acknowledged": bill.acknowledged[difference_id]},
            "differences_total": report["differences_total"],
            "acknowledged_total": report["acknowledged_total"],
            "closed": report["closed"],
        }

    def differences(self, mchid: str, bill_date: date) -> Iterator[dict[str, Any]]:
        """Every difference of the day, streamed (the exports)."""
        self.journal_follower.bring_up_to_date()
        return self.bills.differences(mchid, bill_date, partial(self.ledger.known_refunds, mchid))

    def lines(self, mchid: str, bill_date: date) -> Iterator[dict[str, Any]]:
        """Every bill line with its result, then what only the ledger has (the exports' 对账明细)."""
        self.journal_follower.bring_up_to_date()
        return self.bills.lines(mchid, bill_date, partial(self.ledger.known_refunds, mchid))

    def bill_totals(self, mchid: str, bill_date: date) -> dict[str, int]:
        return self.bills.bill_totals(mchid, bill_date)

    def has_bill(self, mchid: str, bill_date: date) -> bool:
        return self.bills.has_bill(mchid, bill_date)

    def journal_report(self, mchid: str, day_from: date, day_to: date) -> dict[str, Any]:
        self.journal_follower.bring_up_to_date()
        return {
            "from": day_from.isoformat(),
            "to": day_to.isoformat(),
            "lines": self.journal.lines(mchid, day_from, day_to),
            "trial_balance": self.journal.trial_balance(mchid, day_from, day_to),
        }


@contextmanager
def _opened(content: bytes | Path) -> Iterator[Iterator[str]]:
    """The bill's lines: from memory, or read streaming from a file."""
    if isinstance(content, bytes):
        yield iter(io.StringIO(content.decode("utf-8-sig"), newline=""))
        return
    with content.open(encoding="utf-8-sig", newline="") as handle:
        yield iter(handle)


def _sha1(content: bytes | Path) -> str:
    """WeChat states the bill's hash in SHA1; a file is hashed in chunks."""
    digest = hashlib.sha1()  # noqa: S324 — WeChat's choice, for matching its stated hash
    if isinstance(content, bytes):
        digest.update(content)
        return digest.hexdigest()
    with content.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _data(calls: Sequence[Exchange]) -> list[dict[str, Any]]:
    return [call.as_data() for call in calls]


FUND_FLOW_KINDS = {
    "income": "微信入账（交易）与账本应结收入不符",
    "refunds": "退款出账与账本应结退款不符",
    "fees": "手续费与账本不符",
    "settlement": "结算到银行与账本不符",
    "other": "账本没有的资金变动（赔付、扣款等）",
    "opening_balance": "期初余额不符（之前某天的差异带过来）",
}


def _fund_difference(kind: str, wechat_fen: int, journal_fen: int) -> dict[str, Any]:
    return {
        "id": f"fundflow-{kind}",
        "kind": kind,
        "title": FUND_FLOW_KINDS[kind],
        "wechat_fen": wechat_fen,
        "journal_fen": journal_fen,
        "difference_fen": wechat_fen - journal_fen,
    }
