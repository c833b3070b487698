"""Refund follow-up: refunds still ``PROCESSING`` are queried on a backoff until final.

``ABNORMAL`` (the payer's card refused it) is not final at WeChat either: it
is queried hourly, and surfaced — a warning and the ``zhangben_refunds_abnormal``
metric — for a person to finish in the merchant platform.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from adapters.leases import Leases
from application.refunding import RefundService
from domain.status import FOLLOWED_REFUND, RefundStatus
from projections.order_status import OrderStatusView

log = logging.getLogger("zhangben.scheduler")
OFFSETS = [timedelta(minutes=m) for m in (1, 2, 5, 10, 30, 60)]
HOURLY = timedelta(hours=1)


def due_at(requested_at: datetime, checks: int, abnormal: bool) -> datetime:
    if abnormal:
        return requested_at + HOURLY * (checks + 1)
    if checks < len(OFFSETS):
        return requested_at + OFFSETS[checks]
    return requested_at + OFFSETS[-1] + HOURLY * (checks - len(OFFSETS) + 1)


def run(service: RefundService, orders: OrderStatusView, leases: Leases, now: datetime) -> dict[str, int]:
    queried = settled = abnormal = 0
    for order in orders.orders_with_open_refunds():
        for refund in order["refunds"]:
            if refund["status"] not in FOLLOWED_REFUND:
                continue
            is_abnormal = refund["status"] == RefundStatus.ABNORMAL
            checks = leases.checks("refund", refund["out_refund_no"])
            if due_at(datetime.fromisoformat(refund["requested_at"]), checks, is_abnormal) > now:
                abnormal += is_abnormal
                continue
            result = service.sync_refund(refund["mchid"], refund["out_refund_no"])
            leases.checked("refund", refund["out_refund_no"], now)
            queried += 1
            if result.status is RefundStatus.ABNORMAL:
                abnormal += 1
                log.warning("refund %s is ABNORMAL at WeChat: a person must finish it", refund["out_refund_no"])
            elif result.is_final:
                settled += 1
    return {"queried": queried, "settled": settled, "abnormal": abnormal}
