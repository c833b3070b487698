"""One refund at WeChat: one ``out_refund_no``.

WeChat moves a refund PROCESSING → SUCCESS, or to CLOSED, or to ABNORMAL
(the payer's card refused it; a person finishes it).  Results can arrive in
any order — a notification may beat our own record of the submission — so a
stale step changes nothing, while a contradiction (CLOSED after SUCCESS) is
refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import exchange, ids
from domain import notification as kept
from domain.notification import Notification, keep_notification
from domain.status import RefundStatus as S
from domain.transitions import guard

RULES: dict[str, frozenset[S]] = {
    "record a success": frozenset({S.REQUESTED, S.PROCESSING, S.ABNORMAL}),
    "record a close": frozenset({S.REQUESTED, S.PROCESSING, S.ABNORMAL}),
    "record an abnormal result": frozenset({S.REQUESTED, S.PROCESSING}),
    "handle an abnormal refund": frozenset({S.ABNORMAL}),
}
# How a person finishes an ABNORMAL refund (the payer's card refused it):
TO_MERCHANT_BANK_CARD = "merchant_bank_card"  # WeChat pays it to the merchant's bank account (v3 异常退款)
SETTLED_OFFLINE = "settled_offline"  # the merchant gave the money back another way; WeChat is not asked
ABNORMAL_HANDLING = (TO_MERCHANT_BANK_CARD, SETTLED_OFFLINE)

FINAL = frozenset({S.SUCCESS, S.CLOSED})


class Refund(Aggregate):
    TOPIC = "zhangben.Refund"

    class Created(Aggregate.Created):
        """Never triggered: the library defines a ``Created`` on every aggregate,
        and pinned topics must cover it; a refund is created by ``Requested``."""

        TOPIC = "zhangben.Refund.Created"

    class Requested(Created):
        TOPIC = "zhangben.Refund.Requested"
        out_refund_no: str
        mchid: str
        order_id: UUID
        merchant_order_no: str
        out_trade_no: str
        transaction_id: str
        amount_fen: int
        total_fen: int
        reason: str
        requested_at: datetime

    class Submitted(Aggregate.Event):
        TOPIC = "zhangben.Refund.Submitted"
        refund_id: str
        submitted_at: datetime

        def apply(self, refund: Refund) -> None:
            refund.refund_id = self.refund_id
            refund.status = S.PROCESSING

    class Succeeded(Aggregate.Event):
        TOPIC = "zhangben.Refund.Succeeded"
        refund_id: str
        success_time: datetime
        user_received_account: str

        def apply(self, refund: Refund) -> None:
            refund.refund_id = self.refund_id or refund.refund_id
            refund.success_time = self.success_time
            refund.status = S.SUCCESS

    class Closed(Aggregate.Event):
        TOPIC = "zhangben.Refund.Closed"
        refund_id: str
        closed_at: datetime

        def apply(self, refund: Refund) -> None:
            refund.refund_id = self.refund_id or refund.refund_id
            refund.status = S.CLOSED

    class Abnormal(Aggregate.Event):
        TOPIC = "zhangben.Refund.Abnormal"
        refund_id: str
        abnormal_at: datetime

        def apply(self, refund: Refund) -> None:
            refund.refund_id = self.refund_id or refund.refund_id
            refund.status = S.ABNORMAL

    class AbnormalHandled(Aggregate.Event):
        """A person finished an ABNORMAL refund: re-sent to the merchant's bank card, or settled offline."""

        TOPIC = "zhangben.Refund.AbnormalHandled"
        how: str
        note: str
        by: str
        handled_at: datetime

        def apply(self, refund: Refund) -> None:
            refund.handling = {"how": self.how, "note": self.note, "by": self.by}
            if self.how == TO_MERCHANT_BANK_CARD:
                refund.status = S.PROCESSING  # WeChat is paying it again; its result arrives as for any refund

    class Notified(kept.Notified):
        """A verified notification, kept whole: raw headers, raw body, decrypted resource."""

        TOPIC = "zhangben.Refund.Notified"

    class WechatCalled(exchange.WechatCalled):
        """What the ledger asked WeChat Pay about this refund, and the answer (evidence)."""

        TOPIC = "zhangben.Refund.WechatCalled"

    def record_wechat_calls(self, exchanges: Iterable[Mapping[str, Any]]) -> int:
        """Keep each request to WeChat and its answer; how many (``domain.exchange``)."""
        return exchange.keep_exchanges(self, self.WechatCalled, exchanges)

    @staticmethod
    def create_id(mchid: str, out_refund_no: str) -> UUID:
        return ids.refund_id(mchid, out_refund_no)

    @event(Requested)
    def __init__(
        self,
        out_refund_no: str,
        mchid: str,
        order_id: UUID,
        merchant_order_no: str,
        out_trade_no: str,
        transaction_id: str,
        amount_fen: int,
        total_fen: int,
        reason: str,
        requested_at: datetime,
    ) -> None:
        self.out_refund_no = out_refund_no
        self.mchid = mchid
        self.order_id = order_id
        self.merchant_order_no = merchant_order_no
        self.out_trade_no = out_trade_no
        self.transaction_id = transaction_id
        self.amount_fen = amount_fen
        self.total_fen = total_fen
        self.reason = reason
        self.requested_at = requested_at
        self.status = S.REQUESTED
        self.refund_id: str | None = None
        self.success_time: datetime | None = None
        self.notification_ids: list[str] = []
        self.handling: dict[str, str] | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def _guard(self, command: str) -> None:
        guard(RULES, "refund", self.out_refund_no, command, self.status)

    def record_notification(self, notification: Notification, received_at: datetime) -> bool:
        """Keep a notification once per WeChat notification id; say whether it was new."""
        return keep_notification(self, self.Notified, notification, received_at)

    def submit(self, refund_id: str, submitted_at: datetime) -> None:
        """WeChat accepted the refund; a late acknowledgement after a result is stale."""
        if self.status is not S.REQUESTED:
            return
        self.trigger_event(self.Submitted, refund_id=refund_id, submitted_at=submitted_at)

    def succeed(self, refund_id: str, success_time: datetime, user_received_account: str) -> bool:
        if self.status is S.SUCCESS:
            return False
        self._guard("record a success")
        self.trigger_event(
            self.Succeeded,
            refund_id=refund_id,
            success_time=success_time,
            user_received_account=user_received_account,
        )
        return True

    def close(self, refund_id: str, closed_at: datetime) -> bool:
        if self.status is S.CLOSED:
            return False
        self._guard("record a close")
        self.trigger_event(self.Closed, refund_id=refund_id, closed_at=closed_at)
        return True

    def needs_handling(self, how: str, note: str, by: str) -> bool:
        """False for this very handling done already (a retry); refused unless the refund is ABNORMAL.

        Asked before WeChat is, so a retry never sends the refund to WeChat twice.
        """
        if self.handling == {"how": how, "note": note, "by": by} and self.status is not S.ABNORMAL:
            return False
        self._guard("handle an abnormal refund")
        return True

    def handle_abnormal(self, how: str, note: str, by: str, handled_at: datetime) -> bool:
        """Record how a person finished the ABNORMAL refund; the same handling again changes nothing."""
        if not self.needs_handling(how, note, by):
            return False
        self.trigger_event(self.AbnormalHandled, how=how, note=note, by=by, handled_at=handled_at)
        return True

    def mark_abnormal(self, refund_id: str, abnormal_at: datetime) -> bool:
        if self.status is S.ABNORMAL:
            return False
        self._guard("record an abnormal result")
        self.trigger_event(self.Abnormal, refund_id=refund_id, abnormal_at=abnormal_at)
        return True
