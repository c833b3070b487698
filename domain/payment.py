"""One payment attempt at WeChat: one ``out_trade_no``.

WeChat is the authority on whether money moved.  So ``mark_paid`` is
accepted from every status but ``PAID`` — a success after local close or
expiry is still money taken — and only WeChat's own word (a verified
notification or an active query) ever reaches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain import exchange, ids
from domain import notification as kept
from domain.errors import TransactionConflict
from domain.notification import Notification, keep_notification
from domain.status import OPEN_PAYMENT
from domain.status import PaymentStatus as S
from domain.transitions import guard

RULES: dict[str, frozenset[S]] = {
    "record a prepay": frozenset({S.CREATED, S.PREPAID}),
    "mark failed": frozenset({S.CREATED, S.PREPAID}),
    "close": frozenset({S.CREATED, S.PREPAID, S.FAILED}),
    "expire": frozenset({S.CREATED, S.PREPAID}),
    "mark paid": frozenset({S.CREATED, S.PREPAID, S.FAILED, S.CLOSED, S.EXPIRED}),
}

OPEN = OPEN_PAYMENT


class Payment(Aggregate):
    TOPIC = "zhangben.Payment"

    class Created(Aggregate.Created):
        TOPIC = "zhangben.Payment.Created"
        out_trade_no: str
        order_id: UUID
        mchid: str
        merchant_order_no: str
        attempt: int
        amount_fen: int
        description: str
        channel: str
        payer_openid: str | None
        expire_at: datetime
        created_at: datetime
        appid: str  # the app the payer pays through ("" before several apps per merchant: the main one)
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("appid", "")

    class Prepaid(Aggregate.Event):
        TOPIC = "zhangben.Payment.Prepaid"
        prepay_id: str | None
        code_url: str | None
        h5_url: str | None
        prepaid_at: datetime

        def apply(self, payment: Payment) -> None:
            payment.prepay_id = self.prepay_id
            payment.code_url = self.code_url
            payment.h5_url = self.h5_url
            payment.status = S.PREPAID

    class Notified(kept.Notified):
        """A verified notification, kept whole: raw headers, raw body, decrypted resource."""

        TOPIC = "zhangben.Payment.Notified"

    class Paid(Aggregate.Event):
        TOPIC = "zhangben.Payment.Paid"
        transaction_id: str
        total_fen: int
        payer_total_fen: int
        success_time: datetime
        source: str
        nocash_fen: int  # 免充值券: the merchant's own discount, which WeChat does not settle
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("nocash_fen", 0)

        def apply(self, payment: Payment) -> None:
            payment.transaction_id = self.transaction_id
            payment.total_fen = self.total_fen
            payment.payer_total_fen = self.payer_total_fen
            payment.nocash_fen = self.nocash_fen
            payment.success_time = self.success_time
            payment.status = S.PAID

    class AmountMismatched(Aggregate.Event):
        TOPIC = "zhangben.Payment.AmountMismatched"
        expected_fen: int
        total_fen: int

        def apply(self, payment: Payment) -> None:
            payment.amount_mismatch = True

    class Failed(Aggregate.Event):
        TOPIC = "zhangben.Payment.Failed"
        trade_state: str
        reason: str
        failed_at: datetime

        def apply(self, payment: Payment) -> None:
            payment.trade_state = self.trade_state
            payment.status = S.FAILED

    class Closed(Aggregate.Event):
        TOPIC = "zhangben.Payment.Closed"
        closed_at: datetime
        reason: str

        def apply(self, payment: Payment) -> None:
            payment.status = S.CLOSED

    class Expired(Aggregate.Event):
        TOPIC = "zhangben.Payment.Expired"
        expired_at: datetime

        def apply(self, payment: Payment) -> None:
            payment.status = S.EXPIRED

    class WechatCalled(exchange.WechatCalled):
        """What the ledger asked WeChat Pay about this payment, and the answer (evidence)."""

        TOPIC = "zhangben.Payment.WechatCalled"

        def apply(self, payment: Payment) -> None:
            payment.calls_kept += 1

    def record_wechat_calls(self, exchanges: Iterable[Mapping[str, Any]]) -> int:
        """Keep each request to WeChat and its answer; how many (``domain.exchange``)."""
        return exchange.keep_exchanges(self, self.WechatCalled, exchanges)

    @staticmethod
    def create_id(out_trade_no: str) -> UUID:
        return ids.payment_id(out_trade_no)

    def __init__(
        self,
        out_trade_no: str,
        order_id: UUID,
        mchid: str,
        merchant_order_no: str,
        attempt: int,
        amount_fen: int,
        description: str,
        channel: str,
        payer_openid: str | None,
        expire_at: datetime,
        created_at: datetime,
        appid: str = "",
    ) -> None:
        self.out_trade_no = out_trade_no
        self.appid = appid
        self.order_id = order_id
        self.mchid = mchid
        self.merchant_order_no = merchant_order_no
        self.attempt = attempt
        self.amount_fen = amount_fen
        self.description = description
        self.channel = channel
        self.payer_openid = payer_openid
        self.expire_at = expire_at
        self.created_at = created_at
        self.status = S.CREATED
        self.prepay_id: str | None = None
        self.code_url: str | None = None
        self.h5_url: str | None = None
        self.notification_ids: list[str] = []
        self.transaction_id: str | None = None
        self.total_fen: int | None = None
        self.payer_total_fen: int | None = None
        self.nocash_fen = 0
        self.calls_kept = 0  # WechatCalled events: evidence, which moves the version but not the attempt
        self.success_time: datetime | None = None
        self.amount_mismatch = False
        self.trade_state: str | None = None

    @property
    def state_version(self) -> int:
        """The version counting only what changes the attempt, not the evidence kept on it: what a close compares
        to learn whether the attempt moved (was prepaid) while WeChat was being asked."""
        return int(self.version) - self.calls_kept

    @property
    def settlement_fen(self) -> int | None:
        """应结订单金额: what WeChat settles for this payment (the total less the 免充值券); None until paid."""
        return None if self.total_fen is None else self.total_fen - self.nocash_fen

    @property
    def is_open(self) -> bool:
        """WeChat may still take money for this attempt without surprising anyone."""
        return self.status in OPEN

    def _guard(self, command: str) -> None:
        guard(RULES, "payment", self.out_trade_no, command, self.status)

    def record_prepay(
        self, prepay_id: str | None, code_url: str | None, h5_url: str | None, prepaid_at: datetime
    ) -> None:
        if self.status is S.PREPAID and (prepay_id, code_url, h5_url) == (self.prepay_id, self.code_url, self.h5_url):
            return
        self._guard("record a prepay")
        self.trigger_event(self.Prepaid, prepay_id=prepay_id, code_url=code_url, h5_url=h5_url, prepaid_at=prepaid_at)

    def record_notification(self, notification: Notification, received_at: datetime) -> bool:
        """Keep a notification once per WeChat notification id; say whether it was new."""
        return keep_notification(self, self.Notified, notification, received_at)

    def mark_paid(
        self,
        transaction_id: str,
        total_fen: int,
        payer_total_fen: int,
        success_time: datetime,
        source: str,
        nocash_fen: int = 0,
    ) -> bool:
        """Record WeChat's success; say whether it changed anything.

        ``nocash_fen`` is the 免充值券 share of the total: WeChat settles ``total_fen - nocash_fen``
        (应结订单金额); the payer paid ``payer_total_fen``; coupons made up the rest.
        """
        if self.status is S.PAID:
            if transaction_id == self.transaction_id:
                return False
            raise TransactionConflict(
                f"payment {self.out_trade_no!r} is already paid by transaction "
                f"{self.transaction_id}, not {transaction_id}"
            )
        self._guard("mark paid")
        self.trigger_event(
            self.Paid,
            transaction_id=transaction_id,
            total_fen=total_fen,
            payer_total_fen=payer_total_fen,
            success_time=success_time,
            source=source,
            nocash_fen=nocash_fen,
        )
        if total_fen != self.amount_fen:
            self.trigger_event(self.AmountMismatched, expected_fen=self.amount_fen, total_fen=total_fen)
        return True

    def mark_failed(self, trade_state: str, reason: str, failed_at: datetime) -> None:
        if self.status is S.FAILED:
            return
        self._guard("mark failed")
        self.trigger_event(self.Failed, trade_state=trade_state, reason=reason, failed_at=failed_at)

    def close(self, closed_at: datetime, reason: str) -> None:
        if self.status is S.CLOSED:
            return
        self._guard("close")
        self.trigger_event(self.Closed, closed_at=closed_at, reason=reason)

    def expire(self, expired_at: datetime) -> None:
        if self.status is S.EXPIRED:
            return
        self._guard("expire")
        self.trigger_event(self.Expired, expired_at=expired_at)
