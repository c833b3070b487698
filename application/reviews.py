"""Orders a person must settle (``NEEDS_REVIEW``): their resolutions and the notes filed on them.

An order goes to review when its money does not match (paid short, over,
twice, or after it closed); a person keeps the money or gives it back
(``application.payments`` makes the refund at WeChat first), and every
note and resolution is an event on the order: who, when, why.
"""

from __future__ import annotations

from application.ledger import Ledger, retry_on_conflict
from domain.order import Order


class Reviews:
    """The commands that settle an order in review, over the ledger's store."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @retry_on_conflict
    def resolve_review(
        self,
        mchid: str,
        merchant_order_no: str,
        note: str,
        action: str = "accept",
        by: str = "",
        out_refund_no: str | None = None,
    ) -> Order:
        """Close the order's review: ``accept`` keeps the money; ``refund`` names the refund WeChat accepted."""
        order = self.ledger.get_order(mchid, merchant_order_no)
        if order.resolve_review(note, self.ledger.clock(), action, by, out_refund_no):
            self.ledger.save(order)
        return order

    @retry_on_conflict
    def note_review(self, mchid: str, merchant_order_no: str, note: str, by: str) -> Order:
        order = self.ledger.get_order(mchid, merchant_order_no)
        if order.note_review(note, by, self.ledger.clock()):
            self.ledger.save(order)
        return order
