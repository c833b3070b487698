"""Expiry: an attempt past its ``expire_at`` (plus a grace) is closed at WeChat, then ``Expired``.

If WeChat answers that it was paid — in its last second — the payment is
recorded instead.  The order becomes ``EXPIRED`` only when no attempt can
still be paid (the ledger decides that when the last open attempt expires).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from adapters.leases import Leases
from bootstrap.wiring import Runtime

GRACE = timedelta(seconds=60)


def run(rt: Runtime, leases: Leases, now: datetime) -> dict[str, int]:
    expired = paid = 0
    for order in rt.orders.open_orders():
        for payment in order["payments"]:
            if payment["status"] not in ("CREATED", "PREPAID"):
                continue
            if datetime.fromisoformat(payment["expire_at"]) + GRACE > now:
                continue
            result = rt.service.expire_attempt(order["mchid"], payment["out_trade_no"])
            if result.status.value == "PAID":
                paid += 1
            else:
                expired += 1
    return {"expired": expired, "paid": paid}
