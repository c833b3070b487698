"""Refunds: reserved on the order, then settled by WeChat's word (a ``RefundNotice``) or by a person.

The reservation is an event on the order, so two concurrent refunds cannot
together exceed what was paid: one of them loses the race on the order's
version and is re-checked.  WeChat's word on a refund is PROCESSING,
SUCCESS, CLOSED or ABNORMAL (https://pay.weixin.qq.com/doc/v3/merchant/4012791906).
"""

from __future__ import annotations

from application.ledger import Ledger, retry_on_conflict
from domain import ids
from domain.errors import InvalidInput, InvalidTransition, RefundConflict
from domain.limits import require_key
from domain.money import require_fen
from domain.notices import RefundNotice
from domain.notification import Notification
from domain.order import Order
from domain.refund import SETTLED_OFFLINE, Refund
from domain.requests import NewRefund
from domain.status import RefundStatus


class Refunds:
    """The commands on refunds, over the ledger's store."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @retry_on_conflict
    def request_refund(self, request: NewRefund) -> Refund:
        """Reserve a refund on the order; idempotent by ``out_refund_no``.

        ``request.out_trade_no`` names the payment to give money back from (a
        duplicate payment); without it, the payment that paid the order.
        """
        mchid, merchant_order_no, out_refund_no = request.mchid, request.merchant_order_no, request.out_refund_no
        amount_fen = request.amount_fen
        require_fen(amount_fen, "amount_fen")
        require_key(out_refund_no, "out_refund_no")
        order = self.ledger.get_order(mchid, merchant_order_no)
        existing: Refund | None = self.ledger.find(ids.refund_id(mchid, out_refund_no))
        if existing is not None:
            if existing.order_id != order.id or existing.amount_fen != amount_fen:
                raise RefundConflict(f"refund {out_refund_no!r} already exists with different terms")
            return existing
        target = request.out_trade_no or order.paid_out_trade_no
        if target is None or target not in order.captured:
            raise InvalidTransition("order", merchant_order_no, "request a refund", order.status.value)
        order.reserve_refund(out_refund_no, target, amount_fen)
        refund = Refund(
            out_refund_no=out_refund_no,
            mchid=mchid,
            order_id=order.id,
            merchant_order_no=merchant_order_no,
            out_trade_no=target,
            transaction_id=order.transactions[target],
            amount_fen=amount_fen,
            total_fen=order.captured[target],
            reason=request.reason,
            requested_at=self.ledger.clock(),
        )
        self.ledger.save(order, refund)
        return refund

    @retry_on_conflict
    def record_refund_result(
        self, mchid: str, notice: RefundNotice, notification: Notification | None = None
    ) -> Refund:
        """Apply WeChat's word on a refund, the notice whole: PROCESSING, SUCCESS, CLOSED or ABNORMAL.

        A notification that carried the word is kept in the same transaction
        as what it changed, as for payments.
        """
        out_refund_no = notice.out_refund_no
        refund = self.ledger.get_refund(mchid, out_refund_no)
        order: Order = self.ledger.repository.get(refund.order_id)
        now = self.ledger.clock()
        if notification is not None:
            refund.record_notification(notification, now)
        if notice.status == RefundStatus.PROCESSING:
            refund.submit(notice.refund_id, now)
        elif notice.status == RefundStatus.SUCCESS:
            settled_at = notice.success_time or now
            if refund.succeed(notice.refund_id, settled_at, notice.user_received_account):
                order.settle_refund(out_refund_no, settled_at, notice.settlement_refund_fen)
        elif notice.status == RefundStatus.CLOSED:
            if refund.close(notice.refund_id, now):
                order.release_refund(out_refund_no, "closed by WeChat")
        elif notice.status == RefundStatus.ABNORMAL:
            if refund.mark_abnormal(notice.refund_id, now):
                order.refund_abnormal(out_refund_no)
        else:
            raise InvalidInput("status", f"unknown refund status {notice.status!r}")
        self.ledger.save(refund, order)
        return refund

    @retry_on_conflict
    def handle_abnormal_refund(self, mchid: str, out_refund_no: str, how: str, note: str, by: str) -> Refund:
        """A person finished an ABNORMAL refund (``Refund.AbnormalHandled``, who and why).

        Settled offline, the refund is done for the order now (the payer has
        their money); re-sent to the merchant's bank card, WeChat's result
        arrives later as for any refund.
        """
        refund = self.ledger.get_refund(mchid, out_refund_no)
        order: Order = self.ledger.repository.get(refund.order_id)
        now = self.ledger.clock()
        if not refund.handle_abnormal(how, note, by, now):
            return refund
        if how == SETTLED_OFFLINE and refund.succeed(refund.refund_id or "", now, f"线下退款：{note}"[:100]):
            order.settle_refund(out_refund_no, now)
        self.ledger.save(refund, order)
        return refund
