"""The merchant's business order: what is owed, what was taken, what went back.

An order is paid by exactly one payment attempt.  Every other success WeChat
reports for it (a duplicate, a payment after close) is still recorded — the
money was taken — and puts the order in ``NEEDS_REVIEW`` for a person.
Refunds are reserved here, in the order's own event stream, so optimistic
concurrency on the order is what keeps the refund total within what was paid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain import ids
from domain.checkout import CURRENCY, LineItem
from domain.errors import InvalidInput, InvalidTransition, RefundConflict, RefundExceedsPaid, RefundLimitReached
from domain.requests import OrderTerms
from domain.status import OrderStatus as S
from domain.transitions import guard

# WeChat Pay accepts at most 50 partial refunds for one transaction
# (docs/wechatpay-protocol.md §4.5); one order is paid by one transaction, so 50 per order.
MAX_REFUNDS_PER_ORDER = 50

# Reasons an order needs a person's review.
DUPLICATE_PAYMENT = "duplicate_payment"
AMOUNT_MISMATCH = "amount_mismatch"
PAID_AFTER_CLOSE = "paid_after_close"
REVIEW_REFUND_FAILED = "review_refund_failed"  # the refund a resolution made closed or went ABNORMAL: money kept

# Reasons that hold back the shop's "paid": the paying payment itself does not settle the order.
HOLDS_PAID = frozenset({AMOUNT_MISMATCH, PAID_AFTER_CLOSE})

RESERVED, SUCCEEDED, RELEASED = "RESERVED", "SUCCESS", "RELEASED"
REVIEW_REFUND_PREFIX = "RV"  # + the payment's out_trade_no: the refund a review's resolution made

RULES: dict[str, frozenset[S]] = {
    "start a payment attempt": frozenset({S.CREATED, S.PAYING, S.EXPIRED}),
    "close": frozenset({S.CREATED, S.PAYING, S.EXPIRED}),
    "expire": frozenset({S.CREATED, S.PAYING}),
    "request a refund": frozenset({S.PAID, S.PARTIALLY_REFUNDED, S.NEEDS_REVIEW}),
    "resolve a review": frozenset({S.NEEDS_REVIEW}),
}


class Order(Aggregate):
    TOPIC = "zhangben.Order"

    class Created(Aggregate.Created):
        TOPIC = "zhangben.Order.Created"
        mchid: str
        merchant_order_no: str
        amount_fen: int
        description: str
        channel: str
        payer_openid: str | None
        expire_seconds: int
        attach: str | None
        created_at: datetime
        # the shop's checkout (domain/checkout.py); absent from orders created before it existed
        user_id: str | None
        items: list[dict[str, Any]]
        return_url: str | None
        currency: str
        meta: str | None
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.update({"user_id": None, "items": [], "return_url": None, "currency": CURRENCY, "meta": None})

    class AttemptStarted(Aggregate.Event):
        TOPIC = "zhangben.Order.AttemptStarted"
        out_trade_no: str
        channel: str
        payer_openid: str | None
        expire_at: datetime

        def apply(self, order: Order) -> None:
            order.attempts.append(self.out_trade_no)
            order.channel = self.channel
            order.payer_openid = self.payer_openid
            order.expire_at = self.expire_at
            order.status = S.PAYING

    class Paid(Aggregate.Event):
        TOPIC = "zhangben.Order.Paid"
        out_trade_no: str
        transaction_id: str
        total_fen: int
        success_time: datetime

        def apply(self, order: Order) -> None:
            order.captured[self.out_trade_no] = self.total_fen
            order.transactions[self.out_trade_no] = self.transaction_id
            order.paid_out_trade_no = self.out_trade_no
            order.paid_fen = self.total_fen
            order.paid_at = self.success_time
            order.status = order.settled_status()

    class NeedsReview(Aggregate.Event):
        TOPIC = "zhangben.Order.NeedsReview"
        reason: str
        out_trade_no: str
        transaction_id: str
        total_fen: int
        detail: str
        out_refund_no: str | None  # the resolution's refund that failed (reason review_refund_failed)
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("out_refund_no", None)

        def apply(self, order: Order) -> None:
            order.captured.setdefault(self.out_trade_no, self.total_fen)
            order.transactions.setdefault(self.out_trade_no, self.transaction_id)
            order.review_reasons.append(self.reason)
            if self.out_refund_no is not None:
                order.failed_review_refund = self.out_refund_no
            order.status = S.NEEDS_REVIEW

    class ReviewResolved(Aggregate.Event):
        """A person settled what the machine could not: kept the money (accept) or gave it back (refund)."""

        TOPIC = "zhangben.Order.ReviewResolved"
        note: str
        resolved_at: datetime
        action: str  # accept | refund
        by: str  # who: "<role> <api key id>"
        out_refund_no: str | None  # the refund that gave the money back (action refund)
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("action", "accept")
            state.setdefault("by", "")
            state.setdefault("out_refund_no", None)

        def apply(self, order: Order) -> None:
            order.review_reasons.clear()
            order.failed_review_refund = None
            order.resolution = {"action": self.action, "note": self.note, "out_refund_no": self.out_refund_no}
            order.status = order.settled_status()

    class ReviewNoted(Aggregate.Event):
        """A note on the order for whoever resolves it (客服: "the payer says they paid"); changes no money."""

        TOPIC = "zhangben.Order.ReviewNoted"
        note: str
        by: str
        noted_at: datetime

        def apply(self, order: Order) -> None:
            order.notes.append({"note": self.note, "by": self.by, "at": self.noted_at.isoformat()})

    class RefundRequested(Aggregate.Event):
        TOPIC = "zhangben.Order.RefundRequested"
        out_refund_no: str
        out_trade_no: str
        amount_fen: int

        def apply(self, order: Order) -> None:
            order.refunds[self.out_refund_no] = {
                "out_trade_no": self.out_trade_no,
                "amount_fen": self.amount_fen,
                "state": RESERVED,
            }

    class Refunded(Aggregate.Event):
        TOPIC = "zhangben.Order.Refunded"
        out_refund_no: str
        amount_fen: int
        success_time: datetime
        # 应结退款金额: what WeChat took back from the merchant (the amount less its 免充值券 share); None: all of it
        settlement_fen: int | None
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("settlement_fen", None)

        def apply(self, order: Order) -> None:
            order.refunds[self.out_refund_no]["state"] = SUCCEEDED
            order.status = order.settled_status()

    class RefundReleased(Aggregate.Event):
        TOPIC = "zhangben.Order.RefundReleased"
        out_refund_no: str
        reason: str

        def apply(self, order: Order) -> None:
            order.refunds[self.out_refund_no]["state"] = RELEASED
            order.status = order.settled_status()

    class Closed(Aggregate.Event):
        TOPIC = "zhangben.Order.Closed"
        closed_at: datetime
        reason: str

        def apply(self, order: Order) -> None:
            order.closed_at = self.closed_at
            order.status = S.CLOSED

    class Expired(Aggregate.Event):
        TOPIC = "zhangben.Order.Expired"
        expired_at: datetime

        def apply(self, order: Order) -> None:
            order.expired_at = self.expired_at
            order.status = S.EXPIRED

    @staticmethod
    def create_id(mchid: str, merchant_order_no: str) -> UUID:
        return ids.order_id(mchid, merchant_order_no)

    def __init__(
        self,
        mchid: str,
        merchant_order_no: str,
        amount_fen: int,
        description: str,
        channel: str,
        payer_openid: str | None,
        expire_seconds: int,
        attach: str | None,
        created_at: datetime,
        user_id: str | None = None,
        items: Sequence[Mapping[str, Any]] = (),
        return_url: str | None = None,
        currency: str = CURRENCY,
        meta: str | None = None,
    ) -> None:
        self.mchid = mchid
        self.merchant_order_no = merchant_order_no
        self.amount_fen = amount_fen
        self.description = description
        self.channel = channel
        self.payer_openid = payer_openid
        self.expire_seconds = expire_seconds
        self.attach = attach
        self.created_at = created_at
        # The creation body, kept apart from what later attempts change:
        # the idempotency check compares a repeated create against it.
        self.user_id = user_id
        self.items = tuple(LineItem(i["name"], i["quantity"], i["unit_price_fen"]) for i in items)
        self.return_url = return_url
        self.currency = currency
        self.meta = meta
        self.terms = OrderTerms(
            amount_fen,
            description,
            channel,
            payer_openid,
            expire_seconds,
            attach,
            user_id,
            self.items,
            return_url,
            currency,
            meta,
        )
        self.status = S.CREATED
        self.attempts: list[str] = []
        self.expire_at: datetime | None = None
        self.captured: dict[str, int] = {}
        self.transactions: dict[str, str] = {}
        self.paid_out_trade_no: str | None = None
        self.paid_fen = 0
        self.paid_at: datetime | None = None
        self.refunds: dict[str, dict[str, Any]] = {}
        self.review_reasons: list[str] = []
        self.resolution: dict[str, Any] | None = None  # the last ReviewResolved: a repeated resolve is a no-op
        self.failed_review_refund: str | None = None  # the resolution's refund that closed or went ABNORMAL
        self.notes: list[dict[str, str]] = []
        self.closed_at: datetime | None = None
        self.expired_at: datetime | None = None

    # -- derived figures -------------------------------------------------

    @property
    def refunded_fen(self) -> int:
        return sum(r["amount_fen"] for r in self.refunds.values() if r["state"] == SUCCEEDED)

    @property
    def taken_fen(self) -> int:
        """Everything WeChat reported as taken for this order, duplicates included."""
        return sum(self.captured.values())

    def committed_fen(self, out_trade_no: str) -> int:
        """Refunds of one payment that are done or may still go out."""
        return sum(
            r["amount_fen"]
            for r in self.refunds.values()
            if r["out_trade_no"] == out_trade_no and r["state"] != RELEASED
        )

    def refundable_fen(self, out_trade_no: str) -> int:
        return self.captured.get(out_trade_no, 0) - self.committed_fen(out_trade_no)

    def settled_status(self) -> S:
        """The status that the money says, once nothing needs a person."""
        if self.review_reasons:
            return S.NEEDS_REVIEW
        refunded = sum(
            r["amount_fen"]
            for r in self.refunds.values()
            if r["state"] == SUCCEEDED and r["out_trade_no"] == self.paid_out_trade_no
        )
        if refunded == 0:
            return S.PAID
        return S.REFUNDED if refunded >= self.paid_fen else S.PARTIALLY_REFUNDED

    @property
    def is_paid(self) -> bool:
        return self.paid_out_trade_no is not None

    def _guard(self, command: str) -> None:
        guard(RULES, "order", self.merchant_order_no, command, self.status)

    # -- commands ----------------------------------------------------------

    @property
    def deadline(self) -> datetime:
        """The order's own deadline: its creation plus its lifetime (``expire_seconds``).  Its QR codes
        (attempts) live within it; a cashier page renews one until then (application/orders.py)."""
        return self.created_at + timedelta(seconds=self.expire_seconds)

    def next_out_trade_no(self) -> str:
        return ids.out_trade_no_for(self.id, len(self.attempts) + 1)

    def start_attempt(self, out_trade_no: str, channel: str, payer_openid: str | None, expire_at: datetime) -> None:
        self._guard("start a payment attempt")
        self.trigger_event(
            self.AttemptStarted,
            out_trade_no=out_trade_no,
            channel=channel,
            payer_openid=payer_openid,
            expire_at=expire_at,
        )

    def record_payment(self, out_trade_no: str, transaction_id: str, total_fen: int, success_time: datetime) -> None:
        """Record money WeChat took for one of this order's attempts.

        Never refused: a success after close, a second success, or a total
        that differs from the order amount is kept and flagged for review.
        """
        if out_trade_no in self.captured:
            return
        if self.is_paid:
            self._review(
                DUPLICATE_PAYMENT,
                out_trade_no,
                transaction_id,
                total_fen,
                f"order already paid by {self.paid_out_trade_no}",
            )
            return
        was_closed = self.status is S.CLOSED
        self.trigger_event(
            self.Paid,
            out_trade_no=out_trade_no,
            transaction_id=transaction_id,
            total_fen=total_fen,
            success_time=success_time,
        )
        if total_fen != self.amount_fen:
            self._review(
                AMOUNT_MISMATCH,
                out_trade_no,
                transaction_id,
                total_fen,
                f"paid {total_fen} fen for an order of {self.amount_fen} fen",
            )
        if was_closed:
            self._review(
                PAID_AFTER_CLOSE,
                out_trade_no,
                transaction_id,
                total_fen,
                "payment succeeded after the order was closed",
            )

    def _review(
        self,
        reason: str,
        out_trade_no: str,
        transaction_id: str,
        total_fen: int,
        detail: str,
        out_refund_no: str | None = None,
    ) -> None:
        self.trigger_event(
            self.NeedsReview,
            reason=reason,
            out_trade_no=out_trade_no,
            transaction_id=transaction_id,
            total_fen=total_fen,
            detail=detail,
            out_refund_no=out_refund_no,
        )

    def resolve_review(
        self, note: str, resolved_at: datetime, action: str = "accept", by: str = "", out_refund_no: str | None = None
    ) -> bool:
        """Close the review; the same resolution again (a retried request) changes nothing (False).

        A resolution by refund names a refund that is still alive: one WeChat
        closed gave nothing back, and cannot close a review.
        """
        same = {"action": action, "note": note, "out_refund_no": out_refund_no}
        if self.status is not S.NEEDS_REVIEW and self.resolution == same:
            return False
        self._guard("resolve a review")
        if out_refund_no is not None and self.refunds.get(out_refund_no, {}).get("state", RELEASED) == RELEASED:
            raise RefundConflict(f"refund {out_refund_no!r} was closed and gave nothing back: resolve again")
        self.trigger_event(
            self.ReviewResolved, note=note, resolved_at=resolved_at, action=action, by=by, out_refund_no=out_refund_no
        )
        return True

    def note_review(self, note: str, by: str, noted_at: datetime) -> bool:
        """A note for the record; the same note by the same person twice in a row is kept once (False)."""
        if self.notes and self.notes[-1]["note"] == note and self.notes[-1]["by"] == by:
            return False
        self.trigger_event(self.ReviewNoted, note=note, by=by, noted_at=noted_at)
        return True

    def review_refund(self, out_trade_no: str | None) -> tuple[str, str, int]:
        """The refund a "refund" resolution makes: its number, the payment it gives back, how much (docs/api.md).

        A payment other than the one that pays the order (a duplicate) goes back
        whole; the paying one goes back whole if it came after the order was
        closed, else only what it paid beyond the order's amount.  Without a
        name, the one other payment with money left is meant.  The refund is
        numbered ``RV`` + that payment's out_trade_no, so a retried resolution
        finds the one it already reserved (and not closed) instead of making a
        second; after one WeChat closed, the next is ``RV…-2``, ``RV…-3``: a
        dead refund number is never sent again.
        """
        for out_refund_no, reserved in self.refunds.items():
            if (
                is_review_refund(out_refund_no, reserved["out_trade_no"])
                and reserved["state"] != RELEASED
                and out_trade_no in (None, reserved["out_trade_no"])
            ):
                return out_refund_no, reserved["out_trade_no"], reserved["amount_fen"]
        if out_trade_no is None:
            others = [o for o in self.captured if o != self.paid_out_trade_no and self.refundable_fen(o) > 0]
            if len(others) > 1:
                raise InvalidInput(
                    "out_trade_no", f"several payments could be refunded ({', '.join(others)}): name one"
                )
            out_trade_no = others[0] if others else self.paid_out_trade_no
        if out_trade_no is None or out_trade_no not in self.captured:
            raise InvalidInput("out_trade_no", f"{out_trade_no!r} is not a payment WeChat took for this order")
        if out_trade_no != self.paid_out_trade_no or PAID_AFTER_CLOSE in self.review_reasons:
            amount = self.refundable_fen(out_trade_no)
        else:
            amount = min(self.captured[out_trade_no] - self.amount_fen, self.refundable_fen(out_trade_no))
        if amount <= 0:
            raise InvalidInput(
                "action", f"payment {out_trade_no} has nothing to give back beyond the order's amount: accept instead"
            )
        tried = sum(1 for no in self.refunds if is_review_refund(no, out_trade_no))
        number = REVIEW_REFUND_PREFIX + out_trade_no + (f"-{tried + 1}" if tried else "")
        return number, out_trade_no, amount

    def reserve_refund(self, out_refund_no: str, out_trade_no: str, amount_fen: int) -> None:
        """Set aside ``amount_fen`` of one payment for a refund, or refuse."""
        existing = self.refunds.get(out_refund_no)
        if existing is not None:
            if existing["amount_fen"] == amount_fen and existing["out_trade_no"] == out_trade_no:
                return
            raise RefundConflict(f"refund {out_refund_no!r} was already requested with different terms")
        self._guard("request a refund")
        if len(self.refunds) >= MAX_REFUNDS_PER_ORDER:
            raise RefundLimitReached(MAX_REFUNDS_PER_ORDER)
        refundable = self.refundable_fen(out_trade_no)
        if amount_fen > refundable:
            raise RefundExceedsPaid(amount_fen, refundable)
        self.trigger_event(
            self.RefundRequested,
            out_refund_no=out_refund_no,
            out_trade_no=out_trade_no,
            amount_fen=amount_fen,
        )

    def settle_refund(self, out_refund_no: str, success_time: datetime, settlement_fen: int | None = None) -> None:
        refund = self.refunds[out_refund_no]
        if refund["state"] == SUCCEEDED:
            return
        if refund["state"] == RELEASED:
            raise InvalidTransition("refund", out_refund_no, "record a success", "CLOSED")
        self.trigger_event(
            self.Refunded,
            out_refund_no=out_refund_no,
            amount_fen=refund["amount_fen"],
            success_time=success_time,
            settlement_fen=settlement_fen,
        )
        if self.failed_review_refund == out_refund_no and self.review_reasons == [REVIEW_REFUND_FAILED]:
            # the ABNORMAL refund that reopened the review was finished after all: the money went back
            self.trigger_event(
                self.ReviewResolved,
                note=f"refund {out_refund_no} succeeded after all",
                resolved_at=success_time,
                action="refund",
                by="",
                out_refund_no=out_refund_no,
            )

    def release_refund(self, out_refund_no: str, reason: str) -> None:
        refund = self.refunds[out_refund_no]
        if refund["state"] == RELEASED:
            return
        if refund["state"] == SUCCEEDED:
            raise InvalidTransition("refund", out_refund_no, "release", "SUCCESS")
        self.trigger_event(self.RefundReleased, out_refund_no=out_refund_no, reason=reason)
        self._reopen_review(out_refund_no, f"refund {out_refund_no} was {reason}: the money did not go back")

    def refund_abnormal(self, out_refund_no: str) -> None:
        """WeChat could not pay a refund back (ABNORMAL): a review it resolved is open again until it is finished."""
        self._reopen_review(
            out_refund_no,
            f"refund {out_refund_no} is ABNORMAL at WeChat: finish it (merchant bank card or offline) to give it back",
        )

    def _reopen_review(self, out_refund_no: str, detail: str) -> None:
        """The refund a resolution made failed: the order is back in review, with why (docs/api.md)."""
        resolved_by_it = self.resolution is not None and self.resolution.get("out_refund_no") == out_refund_no
        if not resolved_by_it or self.failed_review_refund == out_refund_no:
            return
        refund = self.refunds[out_refund_no]
        otn = refund["out_trade_no"]
        self._review(
            REVIEW_REFUND_FAILED, otn, self.transactions[otn], self.captured[otn], detail, out_refund_no=out_refund_no
        )

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


def is_review_refund(out_refund_no: str, out_trade_no: str) -> bool:
    """Whether ``out_refund_no`` is one a review's resolution made for this payment (``RV…``, ``RV…-2``, …)."""
    base = REVIEW_REFUND_PREFIX + out_trade_no
    return out_refund_no == base or (out_refund_no.startswith(base + "-") and out_refund_no[len(base) + 1 :].isdigit())


def paid_announcements(events: Sequence[Any]) -> set[int]:
    """The versions of an order's events that tell the shop "paid in full, nobody has to look" (``order.paid``).

    The paying payment is announced when it settles the order by itself; one
    that differs from the order's amount or came after the order closed is
    held back (the same command flagged it, so the answer never changes as the
    stream grows), and the order is announced paid by the first resolution that
    keeps the money — an ``accept``, or a refund of only the surplus, not of the
    whole payment.  A duplicate payment never holds it back: the order was paid
    and announced by its first payment.  Works on any stream of ``Order``
    events, those written before this rule included (docs/webhooks.md).
    """
    announced: set[int] = set()
    paid: Order.Paid | None = None
    requested: dict[str, Order.RefundRequested] = {}
    for event in events:
        if isinstance(event, Order.Paid):
            paid = event
            held = any(
                isinstance(other, Order.NeedsReview)
                and other.out_trade_no == event.out_trade_no
                and other.reason in HOLDS_PAID
                for other in events
            )
            if not held:
                announced.add(event.originator_version)
        elif isinstance(event, Order.RefundRequested):
            requested[event.out_refund_no] = event
        elif isinstance(event, Order.ReviewResolved) and paid is not None and not announced:
            refund = requested.get(event.out_refund_no or "") if event.action == "refund" else None
            gives_all_back = (
                refund is not None and refund.out_trade_no == paid.out_trade_no and refund.amount_fen >= paid.total_fen
            )
            if not gives_all_back:
                announced.add(event.originator_version)
    return announced
