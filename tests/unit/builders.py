"""Aggregates put into each status by their own commands (no poking at attributes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from domain.order import Order
from domain.payment import Payment
from domain.refund import Refund
from domain.status import OrderStatus, PaymentStatus, RefundStatus

T0 = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def new_order(amount_fen: int = 1000) -> Order:
    return Order(
        mchid="1900000001",
        merchant_order_no="A1",
        amount_fen=amount_fen,
        description="tea",
        channel="native",
        payer_openid=None,
        expire_seconds=900,
        attach=None,
        created_at=T0,
    )


def order_in(status: OrderStatus) -> Order:
    order = new_order()
    if status is OrderStatus.CREATED:
        return order
    order.start_attempt(order.next_out_trade_no(), "native", None, T0 + timedelta(minutes=15))
    otn = order.attempts[0]
    if status is OrderStatus.PAYING:
        return order
    if status is OrderStatus.CLOSED:
        order.close(T0, "test")
    elif status is OrderStatus.EXPIRED:
        order.expire(T0)
    elif status is OrderStatus.NEEDS_REVIEW:
        order.record_payment(otn, "tx-1", 999, T0)
    else:
        order.record_payment(otn, "tx-1", 1000, T0)
        if status is OrderStatus.PARTIALLY_REFUNDED:
            order.reserve_refund("R1", otn, 400)
            order.settle_refund("R1", T0)
        elif status is OrderStatus.REFUNDED:
            order.reserve_refund("R1", otn, 1000)
            order.settle_refund("R1", T0)
    assert order.status is status
    return order


def new_payment(amount_fen: int = 1000) -> Payment:
    return Payment(
        out_trade_no="zb0001",
        order_id=uuid4(),
        mchid="1900000001",
        merchant_order_no="A1",
        attempt=1,
        amount_fen=amount_fen,
        description="tea",
        channel="native",
        payer_openid=None,
        expire_at=T0 + timedelta(minutes=15),
        created_at=T0,
    )


def payment_in(status: PaymentStatus) -> Payment:
    payment = new_payment()
    if status is PaymentStatus.CREATED:
        return payment
    if status is PaymentStatus.PREPAID:
        payment.record_prepay("wx-prepay", None, None, T0)
    elif status is PaymentStatus.PAID:
        payment.mark_paid("tx-1", 1000, 1000, T0, "notification")
    elif status is PaymentStatus.FAILED:
        payment.mark_failed("PAYERROR", "card refused", T0)
    elif status is PaymentStatus.CLOSED:
        payment.close(T0, "test")
    elif status is PaymentStatus.EXPIRED:
        payment.expire(T0)
    assert payment.status is status
    return payment


def new_refund() -> Refund:
    return Refund(
        out_refund_no="R1",
        mchid="1900000001",
        order_id=uuid4(),
        merchant_order_no="A1",
        out_trade_no="zb0001",
        transaction_id="tx-1",
        amount_fen=400,
        total_fen=1000,
        reason="",
        requested_at=T0,
    )


def refund_in(status: RefundStatus) -> Refund:
    refund = new_refund()
    if status is RefundStatus.PROCESSING:
        refund.submit("rf-1", T0)
    elif status is RefundStatus.SUCCESS:
        refund.succeed("rf-1", T0, "招商银行信用卡0403")
    elif status is RefundStatus.CLOSED:
        refund.close("rf-1", T0)
    elif status is RefundStatus.ABNORMAL:
        refund.mark_abnormal("rf-1", T0)
    assert refund.status is status
    return refund
