"""Money given back, and the orders a person settles: refunds through WeChat, reviews, abnormal refunds.

The rule of every payment use case holds here too: record what we intend
(the refund reserved on the order, durably), call WeChat with no database
transaction open, record what WeChat said
(https://pay.weixin.qq.com/doc/v3/merchant/4012791862).  A refund WeChat
refuses is closed and its reservation released; one it cannot take now stays
requested and the refund follow-up sends it again with the same number.
"""

from __future__ import annotations

import logging

from adapters.wechatpay.client import RefundRequest
from adapters.wechatpay.errors import (
    WechatPayBusinessError,
    WechatPayNotFound,
    WechatPayRateLimited,
    WechatPayUnavailable,
)
from application.payments import PaymentService
from application.refunds import Refunds
from application.reviews import Reviews
from domain.errors import Conflict, InvalidInput
from domain.notices import RefundNotice
from domain.notification import Notification
from domain.order import Order
from domain.refund import ABNORMAL_HANDLING, TO_MERCHANT_BANK_CARD, Refund
from domain.requests import NewRefund
from domain.status import RefundStatus

log = logging.getLogger("zhangben.refunds")

REVIEW_ACTIONS = ("accept", "refund")


class RefundService:
    """Refunds and reviews, wired to WeChat through the payments' clients."""

    def __init__(self, payments: PaymentService, refunds: Refunds, reviews: Reviews) -> None:
        self.payments = payments  # the merchants, their clients, and the evidence kept of each call
        self.refunds = refunds
        self.reviews = reviews

    def refund(self, request: NewRefund) -> Refund:
        """Reserve the refund in the ledger (durably), then ask WeChat, then record its answer.

        ``request.out_trade_no`` names the payment to give money back from (a
        duplicate payment); without it, the payment that paid the order.
        """
        self.payments.merchant(request.mchid)
        refund = self.refunds.request_refund(request)
        if refund.status is not RefundStatus.REQUESTED:
            return refund
        return self.submit_refund(request.mchid, request.out_refund_no)

    def resolve_review(
        self, mchid: str, merchant_order_no: str, note: str, action: str, by: str, out_trade_no: str | None = None
    ) -> Order:
        """A person settles an order in NEEDS_REVIEW: keep the money (``accept``) or give it back (``refund``).

        ``refund`` gives back a duplicate payment whole, or what the paying one
        took beyond the order's amount (``Order.review_refund``), through
        WeChat like any refund, and closes the review only once WeChat has
        accepted that refund: one WeChat refuses answers 409 and leaves the
        review open; retried, the resolution makes a new refund (a new number)
        instead of reusing the dead one, and once done it changes nothing twice.
        A refund that later closes or goes ABNORMAL opens the review again.
        """
        if action not in REVIEW_ACTIONS:
            raise InvalidInput("action", f"action must be one of {', '.join(REVIEW_ACTIONS)}")
        if not note.strip():
            raise InvalidInput("note", "say why in the note: it is kept in the order's history")
        self.payments.merchant(mchid)
        if action == "accept":
            return self.reviews.resolve_review(mchid, merchant_order_no, note, "accept", by)
        order = self.payments.ledger.get_order(mchid, merchant_order_no)
        out_refund_no, target, amount = order.review_refund(out_trade_no)  # a retry finds the refund it made
        refund = self.refund(NewRefund(mchid, merchant_order_no, out_refund_no, amount, note[:80], target))
        if refund.status is RefundStatus.REQUESTED:
            raise WechatPayUnavailable(
                f"WeChat has not taken refund {out_refund_no} yet (it is sent again by the refund follow-up); "
                "the review stays open until WeChat accepts it: retry the resolution"
            )
        if refund.status is RefundStatus.ABNORMAL:
            raise Conflict(
                f"refund {out_refund_no} is ABNORMAL at WeChat: finish it (POST /v1/refunds/{out_refund_no}/abnormal);"
                " the review closes when the money has gone back"
            )
        return self.reviews.resolve_review(mchid, merchant_order_no, note, "refund", by, out_refund_no)

    def note_review(self, mchid: str, merchant_order_no: str, note: str, by: str) -> Order:
        """客服 files what the payer said ("我已付款"); in the order's history for whoever resolves it."""
        if not note.strip():
            raise InvalidInput("note", "the note is empty")
        return self.reviews.note_review(mchid, merchant_order_no, note, by)

    def handle_abnormal_refund(self, mchid: str, out_refund_no: str, how: str, note: str, by: str) -> Refund:
        """Finish an ABNORMAL refund: re-send it to the merchant's bank card where WeChat allows (API v3), or record
        it settled offline.  Idempotent: the same handling again changes nothing."""
        if how not in ABNORMAL_HANDLING:
            raise InvalidInput("action", f"action must be one of {', '.join(ABNORMAL_HANDLING)}")
        if not note.strip():
            raise InvalidInput("note", "say how the money went back: it is kept in the refund's history")
        merchant = self.payments.merchant(mchid)
        refund = self.payments.ledger.get_refund(mchid, out_refund_no)
        if not refund.needs_handling(how, note, by):
            return refund
        if how == TO_MERCHANT_BANK_CARD:
            if merchant.is_v2 or not refund.refund_id:
                raise InvalidInput("action", "WeChat re-sends an abnormal refund only on API v3: settle it offline")
            with self.payments.evidence(refund.id):
                self.payments.client.apply_abnormal_refund(merchant, refund.refund_id, out_refund_no)
        return self.refunds.handle_abnormal_refund(mchid, out_refund_no, how, note, by)

    def submit_refund(self, mchid: str, out_refund_no: str) -> Refund:
        merchant = self.payments.merchant(mchid)
        refund = self.payments.ledger.get_refund(mchid, out_refund_no)
        try:
            with self.payments.evidence(refund.id):
                notice = self.payments.wechat(merchant).request_refund(merchant, RefundRequest.of(refund))
        except (WechatPayUnavailable, WechatPayRateLimited) as exc:
            # Still REQUESTED: the refund follow-up submits it again, with the same out_refund_no.
            log.warning("refund %s not submitted yet: %s", out_refund_no, exc)
            return refund
        except WechatPayBusinessError as exc:
            # WeChat will never make this refund: free the reserved amount, then tell the caller.
            log.warning("refund %s refused by WeChat: %s", out_refund_no, exc)
            self.refunds.record_refund_result(mchid, RefundNotice.closed(out_refund_no))
            raise
        return self.apply_refund(mchid, notice)

    def sync_refund(self, mchid: str, out_refund_no: str) -> Refund:
        merchant = self.payments.merchant(mchid)
        refund = self.payments.ledger.get_refund(mchid, out_refund_no)
        try:
            with self.payments.evidence(refund.id):
                notice = self.payments.wechat(merchant).refund_status(merchant, out_refund_no)
        except WechatPayNotFound:
            return self.submit_refund(mchid, out_refund_no) if refund.status is RefundStatus.REQUESTED else refund
        return self.apply_refund(mchid, notice)

    def apply_refund(self, mchid: str, notice: RefundNotice, notification: Notification | None = None) -> Refund:
        """The one translation of WeChat's word on a refund; a notification is kept in the same save."""
        return self.refunds.record_refund_result(mchid, notice, notification)
