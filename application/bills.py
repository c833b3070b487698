"""WeChat's daily bills as the ledger keeps them: one ``DailyBill`` per merchant and day.

The trade bill's figures (lines, settled, refunded, fees) and the fund flow
bill's are events on the day's bill, with the download's requests and
answers kept beside them; finance's explanations of the differences are
events too (who, why, when).  The bills themselves:
https://pay.weixin.qq.com/doc/v3/merchant/4012791880 (trade) and
https://pay.weixin.qq.com/doc/v3/merchant/4012791881 (fund flow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from application.ledger import Ledger, retry_on_conflict
from domain.bill import BillSummary, DailyBill
from domain.errors import NotFound


class Bills:
    """The commands and reads on the days' bills, over the ledger's store."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def _day(self, mchid: str, bill_date: date) -> DailyBill:
        found: DailyBill | None = self.daily_bill(mchid, bill_date)
        return found or DailyBill(mchid=mchid, bill_date=bill_date.isoformat())

    @retry_on_conflict
    def record_bill_import(
        self, mchid: str, bill_date: date, summary: BillSummary, exchanges: Sequence[Mapping[str, Any]] = ()
    ) -> DailyBill:
        """The day's bill was imported: the journal takes its fee and settlement from this event (the download's
        requests and answers kept beside it)."""
        bill = self._day(mchid, bill_date)
        bill.record_wechat_calls(exchanges)
        bill.record_import(summary, self.ledger.clock())
        self.ledger.save(bill)
        return bill

    @retry_on_conflict
    def record_fund_flow_import(
        self,
        mchid: str,
        bill_date: date,
        figures: dict[str, int],
        sha1: str,
        exchanges: Sequence[Mapping[str, Any]] = (),
    ) -> DailyBill:
        """The day's fund flow bill was imported (``DailyBill.FundFlowImported``), its download's evidence beside."""
        bill = self._day(mchid, bill_date)
        bill.record_wechat_calls(exchanges)
        bill.record_fund_flow(figures, sha1, self.ledger.clock())
        self.ledger.save(bill)
        return bill

    def daily_bill(self, mchid: str, bill_date: date) -> DailyBill | None:
        bill: DailyBill | None = self.ledger.find(DailyBill.create_id(mchid, bill_date.isoformat()))
        return bill

    @retry_on_conflict
    def acknowledge_difference(self, mchid: str, bill_date: date, difference_id: str, note: str, by: str) -> DailyBill:
        """Finance's explanation of one difference, an event on the day's bill (who, why, when)."""
        bill = self.daily_bill(mchid, bill_date)
        if bill is None:
            raise NotFound(f"no bill imported for {bill_date}")
        if bill.acknowledge(difference_id, note, by, self.ledger.clock()):
            self.ledger.save(bill)
        return bill

    def daily_bills(self) -> list[DailyBill]:
        """Every day's bill ever imported, in the order first imported."""
        return list(self.ledger.created(DailyBill.Created.TOPIC))

    def bill_acknowledgements(self, mchid: str, bill_date: date) -> dict[str, dict[str, str]]:
        bill = self.daily_bill(mchid, bill_date)
        return dict(bill.acknowledged) if bill is not None else {}
