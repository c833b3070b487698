"""The order view of the contract, computed from aggregates.

The HTTP API reads the same shape from the status projection; this function
is what the application (and the auditors' "state as of") use directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NotRequired

from typing_extensions import (
    TypedDict,  # pydantic reads these as the API's answer schemas, and needs this one before 3.12
)

from adapters.wechatpay.beijing import beijing_iso
from domain.checkout import meta_object
from domain.order import Order
from domain.payment import Payment
from domain.refund import Refund
from domain.status import RefundStatus


class RefundView(TypedDict):
    out_refund_no: str
    merchant_order_no: str
    out_trade_no: str
    status: str
    amount_fen: int
    refund_id: str | None
    reason: str
    requested_at: str | None
    mchid: str
    success_time: str | None
    handling: NotRequired[dict[str, str] | None]  # how a person finished an ABNORMAL refund (how, note, by)


class PaymentView(TypedDict):
    out_trade_no: str
    status: str
    transaction_id: str | None
    channel: str
    amount_fen: int
    paid_fen: int | None
    payer_total_fen: NotRequired[
        int | None
    ]  # what the payer paid: less than paid_fen when a coupon (代金券) paid the rest
    coupon_fen: NotRequired[int | None]  # what coupons paid (paid_fen − payer_total_fen)
    settlement_fen: NotRequired[int | None]  # 应结订单金额: what WeChat settles (paid_fen less the 免充值券)
    created_at: str | None
    expire_at: str | None


class OrderView(TypedDict):
    merchant_order_no: str
    mchid: str
    status: str
    amount_fen: int
    paid_fen: int
    payer_total_fen: NotRequired[
        int
    ]  # (absent in views written before it existed) what the payer paid of paid_fen; a coupon paid the difference
    coupon_fen: NotRequired[int]  # what coupons paid of paid_fen (充值券 and 免充值券)
    settlement_fen: NotRequired[int]  # 应结订单金额: what WeChat settles for the paying payment (less the 免充值券)
    refunded_fen: int
    description: str
    attach: str | None
    # the shop's checkout (absent in views written before it existed): domain/checkout.py
    currency: NotRequired[str]
    user_id: NotRequired[str | None]
    items: NotRequired[list[dict[str, Any]]]  # name, quantity, unit_price_fen; they add up to amount_fen
    return_url: NotRequired[str | None]
    meta: NotRequired[dict[str, Any] | None]
    created_at: str | None
    paid_at: str | None
    expire_at: str | None
    review_reasons: list[str]
    resolution: NotRequired[dict[str, Any] | None]  # the last review's resolution: action, note, out_refund_no
    notes: NotRequired[list[dict[str, str]]]  # notes filed on the order (note, by, at)
    payments: list[PaymentView]
    refunds: list[RefundView]
    version: int


def _iso(value: datetime | None) -> str | None:
    return beijing_iso(value) if value is not None else None


def refund_view(refund: Refund) -> RefundView:
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
        "handling": refund.handling,
    }


def payment_view(payment: Payment) -> PaymentView:
    return {
        "out_trade_no": payment.out_trade_no,
        "status": payment.status.value,
        "transaction_id": payment.transaction_id,
        "channel": payment.channel,
        "amount_fen": payment.amount_fen,
        "paid_fen": payment.total_fen,
        "payer_total_fen": payment.payer_total_fen,
        "coupon_fen": None if payment.total_fen is None else payment.total_fen - (payment.payer_total_fen or 0),
        "settlement_fen": payment.settlement_fen,
        "created_at": _iso(payment.created_at),
        "expire_at": _iso(payment.expire_at),
    }


def _payer_total(order: Order, payments: Sequence[Payment]) -> int:
    """What the payer paid for the order: the paying attempt's ``payer_total`` (0 before it is paid)."""
    paying = next((p for p in payments if p.out_trade_no == order.paid_out_trade_no), None)
    if paying is None:
        return 0
    return paying.payer_total_fen if paying.payer_total_fen is not None else order.paid_fen


def _settlement(order: Order, payments: Sequence[Payment]) -> int:
    """应结订单金额 of the paying attempt (0 before it is paid)."""
    paying = next((p for p in payments if p.out_trade_no == order.paid_out_trade_no), None)
    return (paying.settlement_fen or 0) if paying is not None else 0


def order_view(order: Order, payments: Sequence[Payment], refunds: Sequence[Refund]) -> OrderView:
    payer_total = _payer_total(order, payments)
    return {
        "merchant_order_no": order.merchant_order_no,
        "mchid": order.mchid,
        "status": order.status.value,
        "amount_fen": order.amount_fen,
        "paid_fen": order.paid_fen,
        "payer_total_fen": payer_total,
        "coupon_fen": order.paid_fen - payer_total,
        "settlement_fen": _settlement(order, payments),
        "refunded_fen": order.refunded_fen,
        "description": order.description,
        "attach": order.attach,
        "currency": order.currency,
        "user_id": order.user_id,
        "items": [item.as_dict() for item in order.items],
        "return_url": order.return_url,
        "meta": meta_object(order.meta),
        "created_at": _iso(order.created_at),
        "paid_at": _iso(order.paid_at),
        "expire_at": _iso(order.expire_at),
        "review_reasons": list(order.review_reasons),
        "resolution": order.resolution,
        "notes": list(order.notes),
        "payments": [payment_view(p) for p in payments],
        "refunds": [refund_view(r) for r in refunds],
        # Every event of the order's aggregates bumps this: a change counter
        # that the live status stream compares against.
        "version": order.version + sum(p.version for p in payments) + sum(r.version for r in refunds),
    }
