"""The ledger's rooms: one application service a job, all over one event store.

A use case or a script takes the rooms it needs; ``Rooms.over`` builds every
one of them on an open ``Ledger`` (the store), for the composition root
(``bootstrap.wiring``), the short CLI commands and the tests.  The rooms
hold no state of their own, so building them is free.
"""

from __future__ import annotations

from dataclasses import dataclass

from application.audit import Audit
from application.bills import Bills
from application.catalogue import Catalogue
from application.ledger import Ledger
from application.orders import Orders
from application.reads import OrderReads
from application.refunds import Refunds
from application.reviews import Reviews


@dataclass(frozen=True)
class Rooms:
    """Every room of the ledger, each given the store it works on."""

    store: Ledger
    orders: Orders
    reviews: Reviews
    refunds: Refunds
    bills: Bills
    catalogue: Catalogue
    audit: Audit
    reads: OrderReads

    @classmethod
    def over(cls, ledger: Ledger) -> Rooms:
        return cls(
            ledger,
            Orders(ledger),
            Reviews(ledger),
            Refunds(ledger),
            Bills(ledger),
            Catalogue(ledger),
            Audit(ledger),
            OrderReads(ledger),
        )

    def close(self) -> None:
        self.store.close()
