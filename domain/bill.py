"""A day's trade bill from WeChat, as imported: the facts the journal needs for fees and settlement.

Importing the same day again is a new fact that replaces the old one in the
views (the journal keeps only the latest import's fee and settlement lines).
"""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.ids import NAMESPACE

# What a reconciliation can find between a day's bill and the ledger (docs/finance.md).
DIFFERENCE_KINDS = ("missing_in_ledger", "missing_in_bill", "amount_mismatch", "status_mismatch")


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

    @staticmethod
    def create_id(mchid: str, bill_date: str) -> UUID:
        return uuid5(NAMESPACE, f"bill/{mchid}/{bill_date}")

    def __init__(self, mchid: str, bill_date: str) -> None:
        self.mchid = mchid
        self.bill_date = bill_date
        self.imports = 0

    def record_import(
        self, lines: int, settled_fen: int, refunded_fen: int, fee_fen: int, sha1: str, imported_at: datetime
    ) -> None:
        self.trigger_event(
            self.Imported,
            lines=lines,
            settled_fen=settled_fen,
            refunded_fen=refunded_fen,
            fee_fen=fee_fen,
            sha1=sha1,
            imported_at=imported_at,
        )

    @property
    def day(self) -> date:
        return date.fromisoformat(self.bill_date)
