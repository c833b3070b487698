"""WeChat's word on a payment attempt or a refund, as one value each.

Built once where WeChat's message is read (a verified notification or a
query's answer, ``adapters.wechatpay``) and passed whole to the use cases,
which hand it to the aggregates: the fields are never unpacked into a long
argument list on the way.  The amounts are integer fen, checked by the
readers (https://pay.weixin.qq.com/doc/v3/merchant/4012791861 for the
transaction's fields, https://pay.weixin.qq.com/doc/v3/merchant/4012791906
for the refund's).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.status import RefundStatus

TOOK_MONEY = ("SUCCESS", "REFUND")  # paid; or paid, then refunded: either way money was taken
CLOSED = "CLOSED"  # WeChat closed the attempt: it will take no money for it
PAYERROR = "PAYERROR"  # the payment failed (a declined card, say); the payer may try again


@dataclass(frozen=True)
class TransactionNotice:
    """WeChat's word on one payment attempt, from a notification or a query."""

    out_trade_no: str
    trade_state: str
    transaction_id: str | None
    total_fen: int | None
    payer_total_fen: int | None
    success_time: datetime | None
    trade_state_desc: str
    # 免充值券 (a NOCASH coupon, v2 NO_CASH): the merchant's own discount, not settled by WeChat:
    # 应结订单金额 = total − nocash (https://pay.weixin.qq.com/doc/v3/merchant/4012791869)
    nocash_fen: int = 0

    @classmethod
    def paid(
        cls,
        out_trade_no: str,
        transaction_id: str,
        total_fen: int,
        success_time: datetime,
        payer_total_fen: int | None = None,
        nocash_fen: int = 0,
    ) -> TransactionNotice:
        """A SUCCESS notice: WeChat took ``total_fen`` for the attempt (the payer ``payer_total_fen``, else all)."""
        return cls(out_trade_no, "SUCCESS", transaction_id, total_fen, payer_total_fen, success_time, "", nocash_fen)

    @property
    def took_money(self) -> bool:
        """SUCCESS, or REFUND (paid, then refunded): either way money was taken."""
        return self.trade_state in TOOK_MONEY

    @property
    def closed(self) -> bool:
        return self.trade_state == CLOSED

    @property
    def failed(self) -> bool:
        return self.trade_state == PAYERROR


@dataclass(frozen=True, kw_only=True)
class RefundNotice:
    """WeChat's word on one refund, from a notification, a query, or the answer to asking for it.

    Only the number and the status are always known: WeChat's refusal of a
    refund is recorded as ``CLOSED`` with nothing else.
    """

    out_refund_no: str
    status: str
    out_trade_no: str = ""
    refund_id: str = ""
    refund_fen: int | None = None
    success_time: datetime | None = None
    user_received_account: str = ""
    # 应结退款金额: what WeChat takes back from the merchant, the refund less its 免充值券 share
    settlement_refund_fen: int | None = None

    @classmethod
    def closed(cls, out_refund_no: str) -> RefundNotice:
        """WeChat refused the refund outright: it will never be made, and its reservation is released."""
        return cls(out_refund_no=out_refund_no, status=RefundStatus.CLOSED.value)
