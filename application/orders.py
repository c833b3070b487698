"""Orders and their payment attempts: the commands that open, pay, close, expire and review them.

One ``Order`` per merchant order number; one ``Payment`` per attempt
(``out_trade_no``), each a new number WeChat has never seen.  Only WeChat's
verified word — a notification or a query's answer, a ``TransactionNotice``
— makes an attempt paid (https://pay.weixin.qq.com/doc/v3/merchant/4012791861).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from adapters.wechatpay.client import PrepayResult
from application.ledger import AsyncStore, Ledger, Load, Save, Steps, retry_on_conflict, run_steps, run_steps_async
from domain import ids
from domain.errors import AttemptRaced, InvalidInput, OrderConflict, PaymentNotFound, TransactionConflict
from domain.idempotency import IdempotencyKey, body_digest
from domain.index import TransactionIndex
from domain.limits import MAX_ATTEMPTS_PER_ORDER, require_channel, require_key
from domain.money import require_fen
from domain.notices import TransactionNotice
from domain.notification import Notification
from domain.order import Order
from domain.payment import Payment
from domain.requests import NewOrder, OrderTerms
from domain.status import OPEN_ORDER


@dataclass(frozen=True)
class PaymentOutcome:
    """What recording a payment success changed."""

    payment: Payment
    order: Order
    changed: bool


@dataclass(frozen=True)
class OpenedOrder:
    """What creating an order gave: the order, its current attempt, and whether it is new."""

    order: Order
    payment: Payment
    created: bool


# WeChat wants an attempt's time_expire at least a minute away (https://pay.weixin.qq.com/doc/v3/merchant/4012791856
# ``time_expire``); an attempt opened closer to the order's deadline than this gets a lifetime of its own
MIN_ATTEMPT = timedelta(seconds=60)


def attempt_expiry(order: Order, now: datetime, qr_seconds: int | None) -> datetime:
    """When an attempt (its QR code) opened ``now`` expires: after ``qr_seconds`` (None: the order's lifetime),
    never past the order's deadline (``Order.deadline``) — so a cashier page renewing it shortly before it
    expires keeps one payable attempt until the deadline.  An order reopened after its deadline (a merchant's new
    attempt of an expired order) gets a lifetime from now, as it always did."""
    lifetime = timedelta(seconds=min(qr_seconds or order.expire_seconds, order.expire_seconds))
    if order.deadline - now >= MIN_ATTEMPT:
        return min(now + lifetime, order.deadline)
    return now + lifetime


class Orders:
    """The commands on orders and attempts, over the ledger's store."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def create_order(self, mchid: str, merchant_order_no: str, terms: OrderTerms) -> tuple[Order, Payment]:
        """``open_order`` without an Idempotency-Key, as the pair (order, current attempt) scripts and tests use."""
        opened = self.open_order(NewOrder(mchid, merchant_order_no, terms))
        return opened.order, opened.payment

    @retry_on_conflict
    def open_order(self, request: NewOrder) -> OpenedOrder:
        """Create an order and its first payment attempt, or find the existing one again.

        The merchant order number is the idempotency key: the same number with
        the same terms returns what exists (its current attempt); with different
        terms it is a conflict.  An ``Idempotency-Key`` names the request: the
        same key with another body is a conflict, and the key is saved in the
        same transaction as the order it first created.  The attempt pays
        through ``request.appid`` (resolved by the caller; "" for the merchant's own).
        """
        mchid, merchant_order_no = request.mchid, request.merchant_order_no
        require_key(merchant_order_no, "merchant_order_no")
        terms = request.terms.checked()
        digest = body_digest({"merchant_order_no": merchant_order_no, **terms.digest_fields()})
        claim: list[IdempotencyKey] = []
        if request.idempotency_key is not None:
            key = request.idempotency_key
            known: IdempotencyKey | None = self.ledger.find(IdempotencyKey.create_id(mchid, key))
            if known is not None and known.body_digest != digest:
                raise OrderConflict(f"Idempotency-Key {key!r} was used with a different body")
            if known is None:
                claim.append(
                    IdempotencyKey(mchid=mchid, key=key, body_digest=digest, merchant_order_no=merchant_order_no)
                )
        existing: Order | None = self.ledger.find(ids.order_id(mchid, merchant_order_no))
        if existing is not None:
            if existing.terms != terms:
                raise OrderConflict(f"order {merchant_order_no!r} already exists with different terms")
            if claim:
                self.ledger.save(*claim)
            return OpenedOrder(existing, self.ledger.get_payment(existing.attempts[-1]), created=False)
        now = self.ledger.clock()
        order = Order(mchid=mchid, merchant_order_no=merchant_order_no, created_at=now, **terms.as_dict())
        payment = self._new_attempt(
            order, terms.channel, terms.payer_openid, now, request.appid or "", request.qr_seconds
        )
        self.ledger.save(order, payment, *claim)
        return OpenedOrder(order, payment, created=True)

    @retry_on_conflict
    def start_payment(
        self,
        order: Order,
        channel: str | None = None,
        payer_openid: str | None = None,
        appid: str | Callable[[str], str] = "",
        qr_seconds: int | None = None,
    ) -> Payment:
        """A new payment attempt with a new ``out_trade_no`` for an unpaid order (its QR code living
        ``qr_seconds`` within the order's deadline: ``_new_attempt``).

        ``appid`` may be a function of the attempt's channel (known only here,
        when the channel is the order's): the app that pays for it.  ``order``
        is the order as the caller saw it with no open attempt (after closing
        them at WeChat): if it moved since, another attempt was started
        meanwhile and this one is refused (``AttemptRaced``), so of concurrent
        requests exactly one opens an attempt — the order's optimistic version
        decides, across workers.
        """
        seen, order = order.version, self.ledger.get_order(order.mchid, order.merchant_order_no)
        if order.version != seen:
            raise AttemptRaced(order.merchant_order_no)
        channel = channel or order.channel
        if payer_openid is None and channel == order.channel:
            payer_openid = order.payer_openid
        require_channel(channel, payer_openid)
        if len(order.attempts) >= MAX_ATTEMPTS_PER_ORDER:
            raise InvalidInput("payments", f"order {order.merchant_order_no!r} has too many payment attempts")
        now, app = self.ledger.clock(), appid(channel) if callable(appid) else appid
        payment = self._new_attempt(order, channel, payer_openid, now, app, qr_seconds)
        self.ledger.save(order, payment)
        return payment

    @staticmethod
    def _new_attempt(
        order: Order, channel: str, payer_openid: str | None, now: datetime, appid: str, qr_seconds: int | None = None
    ) -> Payment:
        out_trade_no = order.next_out_trade_no()
        expire_at = attempt_expiry(order, now, qr_seconds)
        order.start_attempt(out_trade_no, channel, payer_openid, expire_at)
        return Payment(
            out_trade_no=out_trade_no,
            order_id=order.id,
            mchid=order.mchid,
            merchant_order_no=order.merchant_order_no,
            attempt=len(order.attempts),
            amount_fen=order.amount_fen,
            description=order.description,
            channel=channel,
            payer_openid=payer_openid,
            expire_at=expire_at,
            created_at=now,
            appid=appid,
        )

    def record_prepay(
        self, payment: Payment, prepaid: PrepayResult, exchanges: Sequence[Mapping[str, Any]] = ()
    ) -> Payment:
        """WeChat opened the attempt; the prepay request and its answer are kept in the same save.

        ``payment`` is the attempt as the caller holds it, just saved or read: it is written on as it is, and
        read again only if it moved meanwhile (a concurrent close, say) — one read fewer per order created.
        """
        held = [payment]

        @retry_on_conflict
        def record_prepay() -> Payment:
            current = held.pop() if held else self.ledger.get_payment(payment.out_trade_no)
            current.record_prepay(prepaid.prepay_id, prepaid.code_url, prepaid.h5_url, self.ledger.clock())
            current.record_wechat_calls(exchanges)
            self.ledger.save(current)
            return current

        return record_prepay()

    @retry_on_conflict
    def record_notification(self, out_trade_no: str, notification: Notification) -> bool:
        """Keep a verified notification whole, once per WeChat notification id."""
        payment = self.ledger.get_payment(out_trade_no)
        new = payment.record_notification(notification, self.ledger.clock())
        if new:
            self.ledger.save(payment)
        return new

    def record_payment_success(
        self,
        notice: TransactionNotice,
        source: str,
        notification: Notification | None = None,
        mchid: str | None = None,
    ) -> PaymentOutcome:
        """Record WeChat's word that money was taken (from a notification or a query), the notice whole.

        The ``TransactionIndex`` saved alongside makes one ``transaction_id``
        impossible to record twice, across processes.  A notification is kept
        (``Payment.Notified``) in the same transaction as what it caused.  With
        ``mchid``, another merchant's payment is not found, as everywhere else.
        """
        steps = partial(self._payment_success, notice, source, notification, mchid)
        return run_steps(self.ledger, steps, "record_payment_success")

    async def record_payment_success_async(
        self,
        store: AsyncStore,
        notice: TransactionNotice,
        source: str,
        notification: Notification | None = None,
        mchid: str | None = None,
    ) -> PaymentOutcome:
        """The same command from the event loop, through ``store``: a callback's hot path without a thread."""
        steps = partial(self._payment_success, notice, source, notification, mchid)
        return await run_steps_async(store, steps, "record_payment_success")

    def _payment_success(
        self, notice: TransactionNotice, source: str, notification: Notification | None, mchid: str | None
    ) -> Steps[PaymentOutcome]:
        transaction_id, total_fen, success_time = notice.transaction_id, notice.total_fen, notice.success_time
        if not (notice.took_money and transaction_id and total_fen is not None and success_time is not None):
            raise InvalidInput("notice", f"WeChat's word on {notice.out_trade_no} says no money was taken")
        require_fen(total_fen, "total_fen")  # integer fen, whoever built the notice (rule 1)
        if notice.payer_total_fen is not None:
            require_fen(notice.payer_total_fen, "payer_total_fen", allow_zero=True)
        require_fen(notice.nocash_fen, "nocash_fen", allow_zero=True)
        out_trade_no = notice.out_trade_no
        # the payment and the transaction's index in one round trip; the order (named by the payment) in a second
        payment_id, index_id = ids.payment_id(out_trade_no), ids.transaction_index_id(transaction_id)
        loaded = yield Load((payment_id, index_id))
        payment: Payment | None = loaded.get(payment_id)
        if payment is None or (mchid is not None and payment.mchid != mchid):
            raise PaymentNotFound(out_trade_no)
        noted = notification is not None and payment.record_notification(notification, self.ledger.clock())
        if payment.transaction_id == transaction_id:  # already recorded: at most keep the notification
            if noted:
                yield Save((payment,))
            order: Order = (yield Load((payment.order_id,)))[payment.order_id]
            return PaymentOutcome(payment, order, changed=noted)
        index: TransactionIndex | None = loaded.get(index_id)
        if index is not None and index.out_trade_no != out_trade_no:
            raise TransactionConflict(f"transaction {transaction_id} is already recorded for {index.out_trade_no}")
        order = (yield Load((payment.order_id,)))[payment.order_id]
        payer_fen = notice.payer_total_fen if notice.payer_total_fen is not None else total_fen  # no coupon: all
        if not payment.mark_paid(transaction_id, total_fen, payer_fen, success_time, source, notice.nocash_fen):
            return PaymentOutcome(payment, order, changed=False)
        order.record_payment(out_trade_no, transaction_id, total_fen, success_time)
        yield Save((payment, order, TransactionIndex(transaction_id=transaction_id, out_trade_no=out_trade_no)))
        return PaymentOutcome(payment, order, changed=True)

    @retry_on_conflict
    def record_payment_failure(self, out_trade_no: str, trade_state: str, reason: str) -> Payment:
        payment = self.ledger.get_payment(out_trade_no)
        payment.mark_failed(trade_state, reason, self.ledger.clock())
        self.ledger.save(payment)
        return payment

    @retry_on_conflict
    def close_payment(
        self,
        out_trade_no: str,
        reason: str,
        seen_version: int | None = None,
        exchanges: Sequence[Mapping[str, Any]] = (),
    ) -> Payment | None:
        """One attempt closed (at WeChat first, by the caller); the order stays open.

        With ``seen_version`` (the attempt's ``state_version`` when WeChat was
        asked to close it: the evidence kept meanwhile does not count), nothing
        is closed if the attempt moved since — it may have been prepaid
        meanwhile, and WeChat's "not found" no longer holds — and None says:
        ask WeChat again.
        """
        payment = self.ledger.get_payment(out_trade_no)
        if seen_version is not None and payment.state_version != seen_version and payment.is_open:
            return None
        payment.record_wechat_calls(exchanges)
        payment.close(self.ledger.clock(), reason)
        self.ledger.save(payment)
        return payment

    @retry_on_conflict
    def close_order(self, mchid: str, merchant_order_no: str, reason: str = "closed by merchant") -> Order:
        """Close an unpaid order and every attempt still open (closed at WeChat first)."""
        order = self.ledger.get_order(mchid, merchant_order_no)
        now = self.ledger.clock()
        order.close(now, reason)
        open_payments = [p for p in self.ledger.payments(order) if p.is_open]
        for payment in open_payments:
            payment.close(now, reason)
        self.ledger.save(order, *open_payments)
        return order

    @retry_on_conflict
    def expire_payment(self, out_trade_no: str) -> Payment:
        """An attempt ran out of time; the order expires when no attempt is open."""
        payment = self.ledger.get_payment(out_trade_no)
        now = self.ledger.clock()
        payment.expire(now)
        order: Order = self.ledger.repository.get(payment.order_id)
        others_open = any(p.is_open for p in self.ledger.payments(order) if p.out_trade_no != out_trade_no)
        if not others_open and order.status in OPEN_ORDER:
            order.expire(now)
            self.ledger.save(payment, order)
        else:
            self.ledger.save(payment)
        return payment

    @retry_on_conflict
    def expire_order(self, mchid: str, merchant_order_no: str) -> Order:
        """An unpaid order whose attempts have all ended (a failed payment, closed or expired ones): ``EXPIRED``.

        A payer whose payment failed (``PAYERROR``) may start a new attempt while
        the order is open; when nobody does, the order must not stay ``PAYING``
        forever.  An order with an attempt still open is left to that attempt's
        expiry (``expire_payment``).
        """
        order = self.ledger.get_order(mchid, merchant_order_no)
        if order.status in OPEN_ORDER and not any(p.is_open for p in self.ledger.payments(order)):
            order.expire(self.ledger.clock())
            self.ledger.save(order)
        return order
