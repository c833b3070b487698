"""Compensating query: a payment attempt with no notification is asked about, on a backoff.

1, 3, 10 and 30 minutes and 1 hour after creation, then hourly until four
hours after its expiry (the seeds' "no notification within 4 hours → query"
is the outer bound, not the first try).  The answer goes through the same
translation as a notification, so a payment found here is recorded exactly
as a notification would have recorded it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from adapters.leases import Leases
from application.payments import PaymentService
from domain.status import OPEN_PAYMENT
from projections.order_status import OrderStatusView

OFFSETS = [timedelta(minutes=m) for m in (1, 3, 10, 30, 60)]
HOURLY = timedelta(hours=1)
OUTER_BOUND = timedelta(hours=4)


def due_at(created_at: datetime, checks: int) -> datetime:
    if checks < len(OFFSETS):
        return created_at + OFFSETS[checks]
    return created_at + OFFSETS[-1] + HOURLY * (checks - len(OFFSETS) + 1)


def run(service: PaymentService, orders: OrderStatusView, leases: Leases, now: datetime) -> dict[str, int]:
    queried = paid = 0
    for order in orders.open_orders():
        for payment in order["payments"]:
            if payment["status"] not in OPEN_PAYMENT:
                continue
            created = datetime.fromisoformat(payment["created_at"])
            checks = leases.checks("payment", payment["out_trade_no"])
            when = due_at(created, checks)
            if when > now or when > datetime.fromisoformat(payment["expire_at"]) + OUTER_BOUND:
                continue
            outcome = service.sync_payment(service.merchant(order["mchid"]), payment["out_trade_no"])
            leases.checked("payment", payment["out_trade_no"], now)
            queried += 1
            paid += 1 if outcome is not None and outcome.changed else 0
    return {"queried": queried, "paid": paid}
