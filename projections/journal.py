"""The double-entry journal, in fen, one balanced set of lines per money event.

| event | debit | credit |
|---|---|---|
| ``Payment.Paid`` (every payment WeChat took, duplicates too) | wechat_clearing (应结), merchant_discounts (免充值券) | merchant_sales (订单金额) |
| ``Order.Refunded`` (a refund succeeded) | refunds | wechat_clearing (应结退款), merchant_discounts (its 免充值券 share) |
| ``DailyBill.Imported``: the day's fee (the bill's own rate) | wechat_fees | wechat_clearing |
| ``DailyBill.Imported``: settlement, dated T+1 | bank | wechat_clearing |

Each line carries its event's position in the log (``event_ref``) and the
business reference (``out_trade_no``, ``out_refund_no``, ``bill:…``).  Lines
are keyed by (event, line), so replaying a batch inserts nothing twice; a
re-imported bill replaces the day's fee and settlement lines.

It also keeps ``ledger_money``: one row per payment taken and refund made,
by ``transaction_id`` / ``out_refund_no`` — what reconciliation matches the
bill against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification

from adapters.viewdb import ViewDatabase
from adapters.wechatpay.beijing import BEIJING
from domain import ids
from domain.bill import DailyBill
from domain.notices import RefundNotice, TransactionNotice
from domain.order import Order
from domain.payment import Payment
from domain.status import RefundStatus
from projections.core import EventLog

NAME = "journal"
ACCOUNTS = ("wechat_clearing", "merchant_sales", "merchant_discounts", "refunds", "wechat_fees", "bank")
TOPICS = (Payment.Paid.TOPIC, Order.Refunded.TOPIC, DailyBill.Imported.TOPIC)
DDL = [
    "CREATE TABLE IF NOT EXISTS journal_lines (event_ref BIGINT NOT NULL, line_no INTEGER NOT NULL, "
    "mchid TEXT NOT NULL, day TEXT NOT NULL, account TEXT NOT NULL, debit_fen BIGINT NOT NULL, "
    "credit_fen BIGINT NOT NULL, reference TEXT NOT NULL, note TEXT NOT NULL DEFAULT '', "
    "PRIMARY KEY (event_ref, line_no))",
    "CREATE INDEX IF NOT EXISTS journal_by_day ON journal_lines (mchid, day)",
    "CREATE INDEX IF NOT EXISTS journal_by_reference ON journal_lines (reference)",
    "CREATE TABLE IF NOT EXISTS ledger_money (kind TEXT NOT NULL, key TEXT NOT NULL, mchid TEXT NOT NULL, "
    "day TEXT NOT NULL, out_trade_no TEXT NOT NULL, amount_fen BIGINT NOT NULL, event_ref BIGINT NOT NULL, "
    "PRIMARY KEY (kind, key))",
    "CREATE INDEX IF NOT EXISTS ledger_money_by_day ON ledger_money (mchid, day)",
]


@dataclass(frozen=True)
class Line:
    event_ref: int
    line_no: int
    mchid: str
    day: str
    account: str
    debit_fen: int
    credit_fen: int
    reference: str
    note: str = ""


@dataclass(frozen=True)
class Money:
    kind: str  # "payment" | "refund"
    key: str  # transaction_id | out_refund_no
    mchid: str
    day: str
    out_trade_no: str
    amount_fen: int
    event_ref: int


@dataclass
class Batch:
    lines: list[Line]
    money: list[Money]
    replaced_references: list[str]


def beijing_day(moment: datetime) -> str:
    return moment.astimezone(BEIJING).date().isoformat()


@dataclass(frozen=True)
class Posting:
    """Where one event's lines go: the event's position (``ref``), the merchant, the day and what they are for."""

    ref: int
    mchid: str
    day: str
    reference: str

    def pair(self, debit: str, credit: str, fen: int, first: int = 0) -> list[Line]:
        """One balanced movement: the same fen out of one account and into another."""
        return [
            Line(self.ref, first, self.mchid, self.day, debit, fen, 0, self.reference),
            Line(self.ref, first + 1, self.mchid, self.day, credit, 0, fen, self.reference),
        ]

    def split(self, debited: Sequence[tuple[str, int]], credited: Sequence[tuple[str, int]]) -> list[Line]:
        """One balanced movement over several accounts (zero amounts left out): the debits equal the credits."""
        assert sum(f for _, f in debited) == sum(f for _, f in credited)  # noqa: S101 — a journal that cannot balance
        lines = [(account, fen, 0) for account, fen in debited if fen] + [
            (account, 0, fen) for account, fen in credited if fen
        ]
        return [
            Line(self.ref, n, self.mchid, self.day, account, debit, credit, self.reference)
            for n, (account, debit, credit) in enumerate(lines)
        ]


def payment_lines(ref: int, mchid: str, paid: TransactionNotice) -> tuple[list[Line], Money]:
    """The sale at its full total (订单金额), split by who pays it.

    WeChat settles 应结订单金额 = total − 免充值券 (NOCASH coupons): a 充值券 (CASH
    coupon) was funded in advance and WeChat settles it with the payer's share,
    a 免充值券 is the merchant's own discount and nothing is settled for it.  So
    the sale is credited at ``total_fen``, WeChat owes the settlement
    (``wechat_clearing``), and the 免充值券 is the merchant's discount
    (``merchant_discounts``); the payer's and the coupons' shares are noted for
    the clerk.  What reconciliation matches against the bill's 应结订单金额 is
    the settlement.
    https://pay.weixin.qq.com/doc/v3/merchant/4012791869 (交易账单: 应结订单金额, 代金券金额)
    """
    assert paid.total_fen is not None and paid.success_time is not None  # noqa: S101 — a recorded payment has both
    total_fen, nocash_fen, payer_total_fen = paid.total_fen, paid.nocash_fen, paid.payer_total_fen
    day = beijing_day(paid.success_time)
    settlement = total_fen - nocash_fen
    note = ""
    if payer_total_fen is not None and payer_total_fen < total_fen:
        coupons = total_fen - payer_total_fen
        note = f"payer paid {payer_total_fen} fen, coupons {coupons} fen ({nocash_fen} of them 免充值券)"
    posting = Posting(ref, mchid, day, paid.out_trade_no)
    lines = [
        dataclasses.replace(line, note=note)
        for line in posting.split(
            [("wechat_clearing", settlement), ("merchant_discounts", nocash_fen)], [("merchant_sales", total_fen)]
        )
    ]
    return lines, Money("payment", paid.transaction_id or "", mchid, day, paid.out_trade_no, settlement, ref)


def refund_lines(ref: int, mchid: str, refunded: RefundNotice) -> tuple[list[Line], Money]:
    """The refund at its amount; WeChat takes back its 应结退款金额, the 免充值券 share goes back to the discount."""
    assert refunded.refund_fen is not None and refunded.success_time is not None  # noqa: S101 — a settled refund
    amount_fen = refunded.refund_fen
    day = beijing_day(refunded.success_time)
    settlement = amount_fen if refunded.settlement_refund_fen is None else refunded.settlement_refund_fen
    posting = Posting(ref, mchid, day, refunded.out_refund_no)
    return (
        posting.split(
            [("refunds", amount_fen)],
            [("wechat_clearing", settlement), ("merchant_discounts", amount_fen - settlement)],
        ),
        Money("refund", refunded.out_refund_no, mchid, day, refunded.out_trade_no, settlement, ref),
    )


def bill_lines(ref: int, mchid: str, bill_date: date, settled_fen: int, refunded_fen: int, fee_fen: int) -> list[Line]:
    """Fee on the bill's day; the net settled to the bank the next day (T+1)."""
    reference = bill_reference(mchid, bill_date)
    on_day = Posting(ref, mchid, bill_date.isoformat(), reference)
    next_day = Posting(ref, mchid, (bill_date + timedelta(days=1)).isoformat(), reference)
    lines = []
    if fee_fen > 0:
        lines += on_day.pair("wechat_fees", "wechat_clearing", fee_fen)
    elif fee_fen < 0:  # refunds return their fee: a day of refunds only has a negative fee total
        lines += on_day.pair("wechat_clearing", "wechat_fees", -fee_fen)
    net = settled_fen - refunded_fen - fee_fen
    if net > 0:
        lines += next_day.pair("bank", "wechat_clearing", net, first=2)
    elif net < 0:  # more refunded than taken that day: the bank pays WeChat back
        lines += next_day.pair("wechat_clearing", "bank", -net, first=2)
    return lines


def bill_reference(mchid: str, bill_date: date) -> str:
    return f"bill:{mchid}:{bill_date.isoformat()}"


class Journal:
    name = NAME
    tables = ("journal_lines", "ledger_money")

    def __init__(self, log: EventLog, db: ViewDatabase) -> None:
        self.log = log
        self.db = db
        self._cache: dict[UUID, Any] = {}

    def create_tables(self) -> bool:
        for statement in DDL:
            self.db.execute(statement)
        # a database made before journal notes existed gets the column; lines are never rewritten by a replay,
        # so old lines get their notes from `projections rebuild journal`
        self.db.add_column("journal_lines", "note", "TEXT NOT NULL DEFAULT ''")
        return False

    def _aggregate(self, aggregate_id: UUID) -> Any:
        if aggregate_id not in self._cache:
            self._cache[aggregate_id] = self.log.repository.get(aggregate_id)
        return self._cache[aggregate_id]

    def prepare(self, notifications: Sequence[Notification]) -> Batch:
        paid = {ids.as_uuid(n.originator_id) for n in notifications if n.topic == Payment.Paid.TOPIC}
        unknown = [i for i in paid if i not in self._cache]
        if unknown:  # the batch's payments in one query, not one each
            self._cache |= self.log.aggregates(unknown, notifications)
        batch = Batch([], [], [])
        for n in notifications:
            if n.topic not in TOPICS:
                continue
            event: Any = self.log.event(n)
            if n.topic == Payment.Paid.TOPIC:
                payment = self._aggregate(ids.as_uuid(n.originator_id))
                took = TransactionNotice.paid(
                    payment.out_trade_no,
                    event.transaction_id,
                    event.total_fen,
                    event.success_time,
                    event.payer_total_fen,
                    event.nocash_fen,
                )
                lines, money = payment_lines(n.id, payment.mchid, took)
            elif n.topic == Order.Refunded.TOPIC:
                order = self._aggregate(ids.as_uuid(n.originator_id))
                refund = self._aggregate(ids.refund_id(order.mchid, event.out_refund_no))
                refunded = RefundNotice(
                    out_refund_no=event.out_refund_no,
                    status=RefundStatus.SUCCESS.value,
                    out_trade_no=refund.out_trade_no,
                    refund_fen=event.amount_fen,
                    success_time=event.success_time,
                    settlement_refund_fen=event.settlement_fen,
                )
                lines, money = refund_lines(n.id, order.mchid, refunded)
            else:
                bill = self._aggregate(ids.as_uuid(n.originator_id))
                reference = bill_reference(bill.mchid, bill.day)
                # the latest import of a day replaces earlier ones, in this batch as in the table
                batch.lines = [line for line in batch.lines if line.reference != reference]
                batch.replaced_references.append(reference)
                batch.lines += bill_lines(
                    n.id, bill.mchid, bill.day, event.settled_fen, event.refunded_fen, event.fee_fen
                )
                continue
            batch.lines += lines
            batch.money.append(money)
        return batch

    def write(self, batch: Batch) -> None:
        for reference in batch.replaced_references:
            self.db.execute("DELETE FROM journal_lines WHERE reference = ?", (reference,))
        for line in batch.lines:
            self.db.execute(
                "INSERT INTO journal_lines (event_ref, line_no, mchid, day, account, debit_fen, credit_fen, reference, "
                "note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_ref, line_no) DO NOTHING",
                (
                    line.event_ref,
                    line.line_no,
                    line.mchid,
                    line.day,
                    line.account,
                    line.debit_fen,
                    line.credit_fen,
                    line.reference,
                    line.note,
                ),
            )
        for m in batch.money:
            self.db.execute(
                "INSERT INTO ledger_money (kind, key, mchid, day, out_trade_no, amount_fen, event_ref) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, key) DO NOTHING",
                (m.kind, m.key, m.mchid, m.day, m.out_trade_no, m.amount_fen, m.event_ref),
            )

    # -- queries ---------------------------------------------------------------------------

    def lines(self, mchid: str, day_from: date, day_to: date) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT day, account, debit_fen, credit_fen, reference, event_ref, note FROM journal_lines "
            "WHERE mchid = ? AND day >= ? AND day <= ? ORDER BY day, event_ref, line_no",
            (mchid, day_from.isoformat(), day_to.isoformat()),
        )
        return [
            {
                "date": r[0],
                "account": r[1],
                "debit_fen": int(r[2]),
                "credit_fen": int(r[3]),
                "reference": r[4],
                "event": int(r[5]),
                "note": r[6],
            }
            for r in rows
        ]

    def balance_movements(self, mchid: str, day: date) -> dict[str, int]:
        """How the WeChat balance (``wechat_clearing``) moved on ``day``, in the fund flow bill's terms, and where it
        closed: sales in at 应结 (sales less the 免充值券 given), refunds out at 应结 (less the 免充值券 taken back),
        fees, what went to the bank, and the balance through the end of the day."""
        sums = {
            account: (int(debit), int(credit))
            for account, debit, credit in self.db.execute(
                "SELECT account, SUM(debit_fen), SUM(credit_fen) FROM journal_lines WHERE mchid = ? AND day = ? "
                "GROUP BY account",
                (mchid, day.isoformat()),
            )
        }
        closing = self.db.execute(
            "SELECT COALESCE(SUM(debit_fen), 0) - COALESCE(SUM(credit_fen), 0) FROM journal_lines "
            "WHERE mchid = ? AND day <= ? AND account = 'wechat_clearing'",
            (mchid, day.isoformat()),
        )[0][0]

        def debit(account: str) -> int:
            return sums.get(account, (0, 0))[0]

        def credit(account: str) -> int:
            return sums.get(account, (0, 0))[1]

        return {
            "income_fen": credit("merchant_sales") - debit("merchant_discounts"),
            "refunds_fen": debit("refunds") - credit("merchant_discounts"),
            "fees_fen": debit("wechat_fees") - credit("wechat_fees"),
            "settlement_fen": debit("bank") - credit("bank"),
            "other_fen": 0,
            "closing_fen": int(closing),
        }

    def trial_balance(self, mchid: str, day_from: date, day_to: date) -> dict[str, Any]:
        rows = self.db.execute(
            "SELECT account, SUM(debit_fen), SUM(credit_fen) FROM journal_lines WHERE mchid = ? AND day >= ? "
            "AND day <= ? GROUP BY account ORDER BY account",
            (mchid, day_from.isoformat(), day_to.isoformat()),
        )
        accounts = {r[0]: {"debit_fen": int(r[1]), "credit_fen": int(r[2])} for r in rows}
        return {
            "debit_fen": sum(a["debit_fen"] for a in accounts.values()),
            "credit_fen": sum(a["credit_fen"] for a in accounts.values()),
            "accounts": accounts,
        }
