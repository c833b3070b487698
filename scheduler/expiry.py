"""Expiry: an attempt past its ``expire_at`` (plus a grace) is closed at WeChat, then ``Expired``.

If WeChat answers that it was paid — in its last second — the payment is
recorded instead.  The order becomes ``EXPIRED`` only when no attempt can
still be paid (the ledger decides that when the last open attempt expires).
An order whose attempts all ended otherwise — a failed payment (``PAYERROR``)
nobody retried — expires once its last attempt's time is over.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from adapters.leases import Leases
from application.payments import PaymentService
from domain.status import OPEN_PAYMENT, PaymentStatus
from projections.order_status import OrderStatusView

GRACE = timedelta(seconds=60)


def run(service: PaymentService, orders: OrderStatusView, leases: Leases, now: datetime) -> dict[str, int]:
    expired = paid = 0
    for order in orders.open_orders():
        open_attempts = [p for p in order["payments"] if p["status"] in OPEN_PAYMENT]
        if not open_attempts and _ended(order, now):
            # every attempt ended (a PAYERROR, say) and nobody started another: the order expires too
            service.orders.expire_order(order["mchid"], order["merchant_order_no"])
            expired += 1
        for payment in open_attempts:
            if datetime.fromisoformat(payment["expire_at"]) + GRACE > now:
                continue
            result = service.expire_attempt(order["mchid"], payment["out_trade_no"])
            if result.status is PaymentStatus.PAID:
                paid += 1
            else:
                expired += 1
    return {"expired": expired, "paid": paid}


def _ended(order: dict[str, Any], now: datetime) -> bool:
    """The order's last attempt's time (plus the grace) is over; an order without attempts uses its own."""
    times = [p["expire_at"] for p in order["payments"] if p.get("expire_at")] or [order.get("expire_at")]
    latest = max((datetime.fromisoformat(t) for t in times if t), default=None)
    return latest is not None and latest + GRACE <= now
