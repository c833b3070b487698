"""A day's trade bill from WeChat, as imported: the facts the journal needs for fees and settlement.

Importing the same day again is a new fact that replaces the old one in the
views (the journal keeps only the latest import's fee and settlement lines).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain import exchange
from domain.ids import NAMESPACE

# What a reconciliation can find between a day's bill and the ledger (docs/finance.md).
DIFFERENCE_KINDS = ("missing_in_ledger", "missing_in_bill", "amount_mismatch", "status_mismatch")


def difference_id(of: str, transaction_id: str, out_trade_no: str, out_refund_no: str) -> str:
    """A difference's stable name within its day: what it is about, not where it was found.

    ``payment-<transaction_id>`` (or ``payment-<out_trade_no>`` when WeChat's id is
    unknown) and ``refund-<out_refund_no>``: the same difference found again by a
    re-import keeps its id, so an acknowledgement stays with it.
    """
    if of == "refund":
        return f"refund-{out_refund_no}"
    return f"payment-{transaction_id or out_trade_no}"


@dataclass(frozen=True)
class BillSummary:
    """What one imported trade bill adds up to: its lines, the money settled and refunded, WeChat's fees
    (all integer fen), and the file's SHA-1 (https://pay.weixin.qq.com/doc/v3/merchant/4012791880)."""

    lines: int
    settled_fen: int
    refunded_fen: int
    fee_fen: int
    sha1: str


class DailyBill(Aggregate):
    TOPIC = "zhangben.DailyBill"

    class Created(Aggregate.Created):
        TOPIC = "zhangben.DailyBill.Created"
        mchid: str
        bill_date: str

    class Imported(Aggregate.Event):
        TOPIC = "zhangben.DailyBill.Imported"
        lines: int
        settled_fen: int
        refunded_fen: int
        fee_fen: int
        sha1: str
        imported_at: datetime

        def apply(self, bill: DailyBill) -> None:
            bill.imports += 1
            bill.sha1 = self.sha1  # the file this import read (kept in the bill archive)

    class FundFlowImported(Aggregate.Event):
        """The day's fund flow bill (资金账单) was imported: the balance's movements, summed, and where it closed."""

        TOPIC = "zhangben.DailyBill.FundFlowImported"
        lines: int
        income_fen: int  # 交易: what came in for sales (应结)
        refunds_fen: int  # 退款: what went out for refunds (应结退款)
        fees_fen: int  # 手续费
        settlement_fen: int  # 结算 / 提现: what went to the bank
        other_fen: int  # any other movement, signed (赔付 in, 扣款 out …)
        closing_fen: int  # 账户结余 after the day's last movement
        sha1: str
        imported_at: datetime

        def apply(self, bill: DailyBill) -> None:
            bill.fund_flow = {
                "lines": self.lines,
                "income_fen": self.income_fen,
                "refunds_fen": self.refunds_fen,
                "fees_fen": self.fees_fen,
                "settlement_fen": self.settlement_fen,
                "other_fen": self.other_fen,
                "closing_fen": self.closing_fen,
                "sha1": self.sha1,
            }

    class DifferenceAcknowledged(Aggregate.Event):
        """Finance explained one difference of the day (its id from ``difference_id``), so the day can close."""

        TOPIC = "zhangben.DailyBill.DifferenceAcknowledged"
        difference_id: str
        note: str
        by: str
        acknowledged_at: datetime

        def apply(self, bill: DailyBill) -> None:
            bill.acknowledged[self.difference_id] = {
                "note": self.note,
                "by": self.by,
                "at": self.acknowledged_at.isoformat(),
            }

    class WechatCalled(exchange.WechatCalled):
        """What the ledger asked WeChat Pay about this day's bill, and the answer (evidence)."""

        TOPIC = "zhangben.DailyBill.WechatCalled"

    def record_wechat_calls(self, exchanges: Iterable[Mapping[str, Any]]) -> int:
        """Keep each request to WeChat and its answer; how many (``domain.exchange``)."""
        return exchange.keep_exchanges(self, self.WechatCalled, exchanges)

    @staticmethod
    def create_id(mchid: str, bill_date: str) -> UUID:
        return uuid5(NAMESPACE, f"bill/{mchid}/{bill_date}")

    def __init__(self, mchid: str, bill_date: str) -> None:
        self.mchid = mchid
        self.bill_date = bill_date
        self.imports = 0
        self.sha1 = ""
        self.fund_flow: dict[str, int | str] | None = None  # the latest fund flow import's figures
        self.acknowledged: dict[str, dict[str, str]] = {}

    def acknowledge(self, difference_id: str, note: str, by: str, at: datetime) -> bool:
        """Explain a difference; the same explanation again (a retry) is kept once (False), a new one replaces it."""
        earlier = self.acknowledged.get(difference_id)
        if earlier is not None and earlier["note"] == note and earlier["by"] == by:
            return False
        self.trigger_event(
            self.DifferenceAcknowledged, difference_id=difference_id, note=note, by=by, acknowledged_at=at
        )
        return True

    def record_import(self, summary: BillSummary, imported_at: datetime) -> None:
        self.trigger_event(self.Imported, imported_at=imported_at, **asdict(summary))

    def record_fund_flow(self, figures: dict[str, int], sha1: str, imported_at: datetime) -> None:
        """``figures``: lines, income_fen, refunds_fen, fees_fen, settlement_fen, other_fen, closing_fen."""
        self.trigger_event(self.FundFlowImported, sha1=sha1, imported_at=imported_at, **figures)

    @property
    def day(self) -> date:
        return date.fromisoformat(self.bill_date)
