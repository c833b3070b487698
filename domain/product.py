"""A product sold by a printed Native "mode 1" code: what a scan of it costs and says.

The printed code names only ``product_id``; when a payer scans it, WeChat
asks the merchant (the ledger) for a prepay, and the ledger opens a new
order at this price (https://pay.weixin.qq.com/wiki/doc/api/native.php?chapter=6_4).
A product is never deleted — codes stay on shelves — only made inactive, and
every change is an event, so the price a past order was sold at stays explained.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.ids import NAMESPACE
from domain.limits import require_description, require_product_id
from domain.money import require_fen


class Product(Aggregate):
    TOPIC = "zhangben.Product"

    class Created(Aggregate.Created):
        TOPIC = "zhangben.Product.Created"
        mchid: str
        product_id: str
        amount_fen: int
        description: str
        created_at: datetime

    class Changed(Aggregate.Event):
        TOPIC = "zhangben.Product.Changed"
        amount_fen: int
        description: str
        active: bool
        changed_at: datetime

        def apply(self, product: Product) -> None:
            product.amount_fen = self.amount_fen
            product.description = self.description
            product.active = self.active
            product.updated_at = self.changed_at

    @staticmethod
    def create_id(mchid: str, product_id: str) -> UUID:
        return uuid5(NAMESPACE, f"product/{mchid}/{product_id}")

    @classmethod
    def new(cls, mchid: str, product_id: str, amount_fen: int, description: str, at: datetime) -> Product:
        """A product with checked terms (WeChat's ``product_id``: at most 32 letters and digits)."""
        require_product_id(product_id)
        require_fen(amount_fen, "amount_fen")
        require_description(description)
        return cls(mchid=mchid, product_id=product_id, amount_fen=amount_fen, description=description, created_at=at)

    def __init__(self, mchid: str, product_id: str, amount_fen: int, description: str, created_at: datetime) -> None:
        self.mchid = mchid
        self.product_id = product_id
        self.amount_fen = amount_fen
        self.description = description
        self.active = True
        self.created_at = created_at
        self.updated_at = created_at

    def change(self, amount_fen: int, description: str, active: bool, at: datetime) -> bool:
        """New terms for future scans; the same terms again change nothing (and say so)."""
        require_fen(amount_fen, "amount_fen")
        require_description(description)
        if (amount_fen, description, active) == (self.amount_fen, self.description, self.active):
            return False
        self.trigger_event(self.Changed, amount_fen=amount_fen, description=description, active=active, changed_at=at)
        return True
