"""What people read about an order: its view now or at any past moment, its whole history, and the
number that finds it (the merchant's, an attempt's ``out_trade_no``, or WeChat's ``transaction_id``).

Everything here is rebuilt from the events alone, so what an auditor reads
years later is what the ledger knew then (``application.views``,
``application.history``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEvent

from adapters.recorders import Streams, replay
from application.history import HistoryEvent, history_events, version_at
from application.ledger import Ledger
from application.views import OrderView, order_view
from domain import ids
from domain.errors import OrderNotFound
from domain.index import TransactionIndex
from domain.order import Order
from domain.payment import Payment


class OrderReads:
    """The reads for people, over the ledger's store."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def order_view(self, mchid: str, merchant_order_no: str) -> OrderView:
        return self.view_of(self.ledger.get_order(mchid, merchant_order_no))

    def view_of(self, order: Order, *known: Payment) -> OrderView:
        """The order's view; payments already in hand are not loaded again."""
        have = {p.out_trade_no: p for p in known}
        payments = [have.get(otn) or self.ledger.get_payment(otn) for otn in order.attempts]
        return order_view(order, payments, self.ledger.refunds(order))

    def views_of_many(self, order_ids: Iterable[UUID], streams: Streams | None = None) -> dict[UUID, OrderView]:
        """Several orders' views from two queries: the orders, then all their payments and refunds.

        ``streams`` reads the events (a projection passes one that shares them with the others).
        """
        read = streams or self.ledger.streams
        orders: dict[UUID, Order] = {i: replay(None, events) for i, events in read(order_ids).items()}
        related = {
            i: replay(None, events)
            for i, events in read(i for order in orders.values() for i in _related_ids(order)[1:]).items()
        }
        return {
            order_id: order_view(
                order,
                [related[ids.payment_id(otn)] for otn in order.attempts],
                [related[ids.refund_id(order.mchid, no)] for no in order.refunds],
            )
            for order_id, order in orders.items()
        }

    def views_at_many(
        self, wanted: Iterable[tuple[UUID, datetime]], streams: Streams | None = None
    ) -> list[OrderView | None]:
        """The order views as they stood at each moment (None before the order existed), from the events alone:
        two queries for all of them, the rest in memory."""
        wanted = list(wanted)
        read = streams or self.ledger.streams
        found = dict(read(order_id for order_id, _ in wanted))
        now = {order_id: replay(None, events) for order_id, events in found.items()}
        found |= read(i for order in now.values() for i in _related_ids(order)[1:])
        return [_view_at(found, order_id, as_of) for order_id, as_of in wanted]

    def find_order_no(self, mchid: str, number: str) -> str | None:
        """The merchant order number that ``number`` names: itself, a payment's out_trade_no, or WeChat's
        transaction_id (what a payer reads off their receipt) — within ``mchid``'s orders only."""
        number = number.strip()
        if not number:
            return None
        try:
            return self.ledger.get_order(mchid, number).merchant_order_no
        except OrderNotFound:
            pass
        payment = self.paid_by(mchid, number) or self.payment(mchid, number)
        return str(payment.merchant_order_no) if payment is not None else None

    def paid_by(self, mchid: str, transaction_id: str) -> Payment | None:
        """``mchid``'s payment that WeChat's ``transaction_id`` paid, from the ledger's index (None: not recorded)."""
        index: TransactionIndex | None = self.ledger.find(ids.transaction_index_id(transaction_id))
        return self.payment(mchid, index.out_trade_no) if index is not None else None

    def payment(self, mchid: str, out_trade_no: str) -> Payment | None:
        """The attempt ``out_trade_no`` when it is ``mchid``'s (another merchant's is None, as if absent)."""
        payment: Payment | None = self.ledger.find(ids.payment_id(out_trade_no))
        return payment if payment is not None and payment.mchid == mchid else None

    def order_history(self, mchid: str, merchant_order_no: str, as_of: datetime | None = None) -> list[HistoryEvent]:
        """Every event of the order, its payments and its refunds, oldest first."""
        order = self.ledger.get_order(mchid, merchant_order_no)
        streams = [self.ledger.events_of(i) for i in _related_ids(order)]
        return history_events(streams, as_of)

    def order_state_as_of(self, mchid: str, merchant_order_no: str, as_of: datetime) -> OrderView:
        """The order view as it stood at ``as_of``, rebuilt from the events alone."""
        (view,) = self.views_at_many([(ids.order_id(mchid, merchant_order_no), as_of)])
        if view is None:
            raise OrderNotFound(mchid, merchant_order_no)
        return view


def _related_ids(order: Order) -> list[UUID]:
    return [
        order.id,
        *(ids.payment_id(otn) for otn in order.attempts),
        *(ids.refund_id(order.mchid, no) for no in order.refunds),
    ]


def _view_at(streams: dict[UUID, list[DomainEvent]], order_id: UUID, as_of: datetime) -> OrderView | None:
    def at(aggregate_id: UUID) -> Any:
        events = streams.get(aggregate_id, [])
        version = version_at(events, as_of)
        return None if version is None else replay(None, events[:version])

    order: Order | None = at(order_id)
    if order is None:
        return None
    payments = [at(ids.payment_id(otn)) for otn in order.attempts]
    refunds = [at(ids.refund_id(order.mchid, no)) for no in order.refunds]
    return order_view(order, _present(payments), _present(refunds))


def _present(items: Iterable[Any]) -> list[Any]:
    return [item for item in items if item is not None]
