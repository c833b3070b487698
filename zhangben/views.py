"""The order view of the contract, computed from aggregates.

The HTTP API reads the same shape from the status projection; this function
is what the application (and the auditors' "state as of") use directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from domain.order import Order
from domain.payment import Payment
from domain.refund import Refund
from domain.status import RefundStatus


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def refund_view(refund: Refund) -> dict[str, Any]:
    # Until WeChat answers, a requested refund is already in progress to a client.
    status = RefundStatus.PROCESSING if refund.status is RefundStatus.REQUESTED else refund.status
    return {
        "out_refund_no": refund.out_refund_no,
        "merchant_order_no": refund.merchant_order_no,
        "out_trade_no": refund.out_trade_no,
        "status": status.value,
        "amount_fen": refund.amount_fen,
        "refund_id": refund.refund_id,
        "reason": refund.reason,
        "requested_at": _iso(refund.requested_at),
        "mchid": refund.mchid,
        "success_time": _iso(refund.success_time),
    }


def payment_view(payment: Payment) -> dict[str, Any]:
    return {
        "out_trade_no": payment.out_trade_no,
        "status": payment.status.value,
        "transaction_id": payment.transaction_id,
        "channel": payment.channel,
        "amount_fen": payment.amount_fen,
        "paid_fen": payment.total_fen,
        "created_at": _iso(payment.created_at),
        "expire_at": _iso(payment.expire_at),
    }


def order_view(order: Order, payments: Sequence[Payment], refunds: Sequence[Refund]) -> dict[str, Any]:
    return {
        "merchant_order_no": order.merchant_order_no,
        "mchid": order.mchid,
        "status": order.status.value,
        "amount_fen": order.amount_fen,
        "paid_fen": order.paid_fen,
        "refunded_fen": order.refunded_fen,
        "description": order.description,
        "attach": order.attach,
        "created_at": _iso(order.created_at),
        "paid_at": _iso(order.paid_at),
        "expire_at": _iso(order.expire_at),
        "review_reasons": list(order.review_reasons),
        "payments": [payment_view(p) for p in payments],
        "refunds": [refund_view(r) for r in refunds],
        # Every event of the order's aggregates bumps this: a change counter
        # that the live status stream compares against.
        "version": order.version + sum(p.version for p in payments) + sum(r.version for r in refunds),
    }
