"""The ledger application: one method per use case, idempotent by construction.

Each command loads what it needs, asks the aggregates to decide, and saves
every changed aggregate in one ``save()`` — one database transaction.  Two
processes racing on the same command collide on the event store's primary
key (``IntegrityError``); the command is then re-run on fresh state, where
the idempotency checks make the loser a no-op.
"""

from __future__ import annotations

import functools
import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, ParamSpec, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.domain import Aggregate, DomainEvent
from eventsourcing.persistence import IntegrityError

from adapters.recorders import Streams, existing, read_streams, replay
from application import apikeys
from application.history import HistoryEvent, history_events, version_at
from application.views import OrderView, order_view
from domain import ids
from domain.apikey import ApiKey, Principal
from domain.audit import RefusedCallback
from domain.bill import DailyBill
from domain.errors import (
    AttemptRaced,
    ConcurrencyConflict,
    Conflict,
    InvalidInput,
    InvalidTransition,
    NotFound,
    OrderConflict,
    OrderNotFound,
    PaymentNotFound,
    ProductNotFound,
    RefundConflict,
    RefundNotFound,
    TransactionConflict,
)
from domain.idempotency import IdempotencyKey, body_digest
from domain.index import TransactionIndex
from domain.limits import MAX_ATTEMPTS_PER_ORDER, order_terms, require_channel, require_key
from domain.money import require_fen
from domain.notification import Notification
from domain.order import Order
from domain.payment import Payment
from domain.product import Product
from domain.refund import SETTLED_OFFLINE, Refund
from domain.status import OrderStatus, RefundStatus

P = ParamSpec("P")
R = TypeVar("R")

# Where "now" comes from: injected (``bootstrap.clock``), never read inside an event.
Clock = Callable[[], datetime]

MAX_CONFLICT_ATTEMPTS = 8


def retry_on_conflict(command: Callable[P, R]) -> Callable[P, R]:
    """Re-run a whole command on fresh state after an optimistic-concurrency loss."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, MAX_CONFLICT_ATTEMPTS + 1):
            try:
                return command(*args, **kwargs)
            except IntegrityError:
                if attempt == MAX_CONFLICT_ATTEMPTS:
                    break
                time.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311 — jitter, not a secret
        raise ConcurrencyConflict(
            f"{command.__name__}: still conflicting after {MAX_CONFLICT_ATTEMPTS} attempts; retry later"
        )

    return wrapper


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


class LedgerRepository(Repository[UUID]):
    """The library's repository, replaying with ``replay`` unless told otherwise."""

    def get(self, aggregate_id: UUID, *, version: int | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("projector_func", replay)
        return super().get(aggregate_id, version=version, **kwargs)


class Ledger(Application[UUID]):
    name = "Ledger"  # pinned: the name sets the table names and the env prefix

    def __init__(self, env: dict[str, str] | None, clock: Clock) -> None:
        super().__init__(env)
        self.clock = clock

    def construct_repository(self) -> Repository[UUID]:
        """The library's repository (no aggregate cache: several processes write), replaying with ``replay``."""
        return LedgerRepository(event_store=self.events, snapshot_store=self.snapshots)

    # -- loading -------------------------------------------------------------

    def get_order(self, mchid: str, merchant_order_no: str) -> Order:
        try:
            return self.repository.get(ids.order_id(mchid, merchant_order_no))
        except AggregateNotFoundError:
            raise OrderNotFound(mchid, merchant_order_no) from None

    def get_payment(self, out_trade_no: str) -> Payment:
        try:
            return self.repository.get(ids.payment_id(out_trade_no))
        except AggregateNotFoundError:
            raise PaymentNotFound(out_trade_no) from None

    def get_refund(self, mchid: str, out_refund_no: str) -> Refund:
        try:
            return self.repository.get(ids.refund_id(mchid, out_refund_no))
        except AggregateNotFoundError:
            raise RefundNotFound(out_refund_no) from None

    def _load_optional(self, aggregate_id: UUID) -> Any:  # the aggregate class depends on the id
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def streams(self, aggregate_ids: Iterable[UUID]) -> dict[UUID, list[DomainEvent]]:
        """The events of several aggregates, read in one query (``adapters.recorders``); absent ones are left out."""
        return read_streams(self.recorder, self.mapper, aggregate_ids)

    def created(self, topic: str, after: int = 0, page: int = 1000) -> Iterator[Any]:
        """Every aggregate whose creation event has ``topic``, in the order created, read page by page from the
        log (each page's aggregates in one query)."""
        while notifications := self.recorder.select_notifications(after + 1, page, topics=[topic]):
            wanted = [ids.as_uuid(n.originator_id) for n in notifications]
            loaded = self.load_many(wanted)
            yield from (loaded[i] for i in wanted if i in loaded)
            if len(notifications) < page:
                return
            after = notifications[-1].id

    def known_payments(self, out_trade_nos: Iterable[str]) -> set[str]:
        """Which of these out_trade_no are attempts the ledger issued (one query)."""
        by_id = {ids.payment_id(otn): otn for otn in out_trade_nos}
        return {by_id[i] for i in existing(self.recorder, list(by_id))}

    def known_refunds(self, mchid: str, out_refund_nos: Iterable[str]) -> set[str]:
        """Which of these out_refund_no are the merchant's refunds in the ledger (one query)."""
        by_id = {ids.refund_id(mchid, no): no for no in out_refund_nos}
        return {by_id[i] for i in existing(self.recorder, list(by_id))}

    def load_many(self, aggregate_ids: Iterable[UUID]) -> dict[UUID, Any]:
        """Several aggregates in one round trip, as ``repository.get`` would give each (absent ones left out)."""
        return {i: replay(None, events) for i, events in self.streams(aggregate_ids).items()}

    # -- orders and payment attempts ------------------------------------------

    def create_order(
        self,
        mchid: str,
        merchant_order_no: str,
        amount_fen: int,
        description: str,
        channel: str,
        payer_openid: str | None = None,
        expire_seconds: int = 900,
        attach: str | None = None,
    ) -> tuple[Order, Payment]:
        """``open_order`` without an Idempotency-Key, as the pair (order, current attempt) scripts and tests use."""
        opened = self.open_order(
            mchid, merchant_order_no, amount_fen, description, channel, payer_openid, expire_seconds, attach
        )
        return opened.order, opened.payment

    @retry_on_conflict
    def open_order(
        self,
        mchid: str,
        merchant_order_no: str,
        amount_fen: int,
        description: str,
        channel: str,
        payer_openid: str | None = None,
        expire_seconds: int = 900,
        attach: str | None = None,
        idempotency_key: str | None = None,
        appid: str = "",
    ) -> OpenedOrder:
        """Create an order and its first payment attempt, or find the existing one again.

        The merchant order number is the idempotency key: the same number with
        the same terms returns what exists (its current attempt); with different
        terms it is a conflict.  An ``Idempotency-Key`` names the request: the
        same key with another body is a conflict, and the key is saved in the
        same transaction as the order it first created.
        """
        require_key(merchant_order_no, "merchant_order_no")
        terms = order_terms(amount_fen, description, channel, payer_openid, expire_seconds, attach)
        digest = body_digest({"merchant_order_no": merchant_order_no, **terms})
        claim: list[IdempotencyKey] = []
        if idempotency_key is not None:
            known: IdempotencyKey | None = self._load_optional(IdempotencyKey.create_id(mchid, idempotency_key))
            if known is not None and known.body_digest != digest:
                raise OrderConflict(f"Idempotency-Key {idempotency_key!r} was used with a different body")
            if known is None:
                claim.append(
                    IdempotencyKey(
                        mchid=mchid, key=idempotency_key, body_digest=digest, merchant_order_no=merchant_order_no
                    )
                )
        existing: Order | None = self._load_optional(ids.order_id(mchid, merchant_order_no))
        if existing is not None:
            if existing.terms != terms:
                raise OrderConflict(f"order {merchant_order_no!r} already exists with different terms")
            if claim:
                self.save(*claim)
            return OpenedOrder(existing, self.get_payment(existing.attempts[-1]), created=False)
        now = self.clock()
        order = Order(mchid=mchid, merchant_order_no=merchant_order_no, created_at=now, **terms)
        payment = self._new_attempt(order, channel, payer_openid, now, appid)
        self.save(order, payment, *claim)
        return OpenedOrder(order, payment, created=True)

    @retry_on_conflict
    def start_payment(
        self,
        mchid: str,
        merchant_order_no: str,
        channel: str | None = None,
        payer_openid: str | None = None,
        appid: str | Callable[[str], str] = "",
        expected_version: int | None = None,
    ) -> Payment:
        """A new payment attempt with a new ``out_trade_no`` for an unpaid order.

        ``appid`` may be a function of the attempt's channel (known only here,
        when the channel is the order's): the app that pays for it.
        ``expected_version`` is the order's version when the caller saw no open
        attempt (after closing them at WeChat): if the order moved since, another
        attempt was started meanwhile and this one is refused (``AttemptRaced``),
        so of concurrent requests exactly one opens an attempt — the order's
        optimistic version decides, across workers.
        """
        order = self.get_order(mchid, merchant_order_no)
        if expected_version is not None and order.version != expected_version:
            raise AttemptRaced(merchant_order_no)
        channel = channel or order.channel
        if payer_openid is None and channel == order.channel:
            payer_openid = order.payer_openid
        require_channel(channel, payer_openid)
        if len(order.attempts) >= MAX_ATTEMPTS_PER_ORDER:
            raise InvalidInput("payments", f"order {merchant_order_no!r} has too many payment attempts")
        payment = self._new_attempt(
            order, channel, payer_openid, self.clock(), appid(channel) if callable(appid) else appid
        )
        self.save(order, payment)
        return payment

    def _new_attempt(
        self, order: Order, channel: str, payer_openid: str | None, now: datetime, appid: str = ""
    ) -> Payment:
        out_trade_no = order.next_out_trade_no()
        expire_at = now + timedelta(seconds=order.expire_seconds)
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

    @retry_on_conflict
    def record_prepay(
        self,
        out_trade_no: str,
        prepay_id: str | None = None,
        code_url: str | None = None,
        h5_url: str | None = None,
        exchanges: Sequence[Mapping[str, Any]] = (),
    ) -> Payment:
        """WeChat opened the attempt; the prepay request and its answer are kept in the same save."""
        payment = self.get_payment(out_trade_no)
        payment.record_prepay(prepay_id, code_url, h5_url, self.clock())
        payment.record_wechat_calls(exchanges)
        self.save(payment)
        return payment

    @retry_on_conflict
    def record_wechat_calls(self, aggregate_id: UUID, exchanges: Sequence[Mapping[str, Any]]) -> None:
        """Keep requests to WeChat and its answers on the payment, refund or day's bill they were for."""
        aggregate = self._load_optional(aggregate_id)
        if aggregate is not None and exchanges and aggregate.record_wechat_calls(exchanges):
            self.save(aggregate)

    @retry_on_conflict
    def record_notification(self, out_trade_no: str, notification: Notification) -> bool:
        """Keep a verified notification whole, once per WeChat notification id."""
        payment = self.get_payment(out_trade_no)
        new = payment.record_notification(notification, self.clock())
        if new:
            self.save(payment)
        return new

    @retry_on_conflict
    def record_payment_success(
        self,
        out_trade_no: str,
        transaction_id: str,
        total_fen: int,
        payer_total_fen: int,
        success_time: datetime,
        source: str,
        notification: Notification | None = None,
        mchid: str | None = None,
        nocash_fen: int = 0,
    ) -> PaymentOutcome:
        """Record WeChat's word that money was taken (from a notification or a query).

        The ``TransactionIndex`` saved alongside makes one ``transaction_id``
        impossible to record twice, across processes.  A notification is kept
        (``Payment.Notified``) in the same transaction as what it caused.  With
        ``mchid``, another merchant's payment is not found, as everywhere else.
        """
        require_fen(total_fen, "total_fen")
        require_fen(payer_total_fen, "payer_total_fen", allow_zero=True)
        require_fen(nocash_fen, "nocash_fen", allow_zero=True)
        # the payment and the transaction's index in one round trip; the order (named by the payment) in a second
        payment_id, index_id = ids.payment_id(out_trade_no), ids.transaction_index_id(transaction_id)
        loaded = self.load_many((payment_id, index_id))
        payment: Payment | None = loaded.get(payment_id)
        if payment is None or (mchid is not None and payment.mchid != mchid):
            raise PaymentNotFound(out_trade_no)
        noted = notification is not None and payment.record_notification(notification, self.clock())
        if payment.transaction_id == transaction_id:  # already recorded: at most keep the notification
            if noted:
                self.save(payment)
            return PaymentOutcome(payment, self.repository.get(payment.order_id), changed=noted)
        index: TransactionIndex | None = loaded.get(index_id)
        if index is not None and index.out_trade_no != out_trade_no:
            raise TransactionConflict(f"transaction {transaction_id} is already recorded for {index.out_trade_no}")
        order: Order = self.repository.get(payment.order_id)
        if not payment.mark_paid(transaction_id, total_fen, payer_total_fen, success_time, source, nocash_fen):
            return PaymentOutcome(payment, order, changed=False)
        order.record_payment(out_trade_no, transaction_id, total_fen, success_time)
        self.save(payment, order, TransactionIndex(transaction_id=transaction_id, out_trade_no=out_trade_no))
        return PaymentOutcome(payment, order, changed=True)

    @retry_on_conflict
    def record_payment_failure(self, out_trade_no: str, trade_state: str, reason: str) -> Payment:
        payment = self.get_payment(out_trade_no)
        payment.mark_failed(trade_state, reason, self.clock())
        self.save(payment)
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
        asked to close it: the evidence kept meanwhile does not count), nothing is closed if the attempt moved since — it may have
        been prepaid meanwhile, and WeChat's "not found" no longer holds — and
        None says: ask WeChat again.
        """
        payment = self.get_payment(out_trade_no)
        if seen_version is not None and payment.state_version != seen_version and payment.is_open:
            return None
        payment.record_wechat_calls(exchanges)
        payment.close(self.clock(), reason)
        self.save(payment)
        return payment

    @retry_on_conflict
    def close_order(self, mchid: str, merchant_order_no: str, reason: str = "closed by merchant") -> Order:
        """Close an unpaid order and every attempt still open (closed at WeChat first)."""
        order = self.get_order(mchid, merchant_order_no)
        now = self.clock()
        order.close(now, reason)
        open_payments = [p for p in self._payments(order) if p.is_open]
        for payment in open_payments:
            payment.close(now, reason)
        self.save(order, *open_payments)
        return order

    @retry_on_conflict
    def expire_payment(self, out_trade_no: str) -> Payment:
        """An attempt ran out of time; the order expires when no attempt is open."""
        payment = self.get_payment(out_trade_no)
        now = self.clock()
        payment.expire(now)
        order: Order = self.repository.get(payment.order_id)
        others_open = any(p.is_open for p in self._payments(order) if p.out_trade_no != out_trade_no)
        changed: list[Aggregate] = [payment]
        if not others_open and order.status in (OrderStatus.CREATED, OrderStatus.PAYING):
            order.expire(now)
            changed.append(order)
        self.save(*changed)
        return payment

    @retry_on_conflict
    def expire_order(self, mchid: str, merchant_order_no: str) -> Order:
        """An unpaid order whose attempts have all ended (a failed payment, closed or expired ones): ``EXPIRED``.

        A payer whose payment failed (``PAYERROR``) may start a new attempt while
        the order is open; when nobody does, the order must not stay ``PAYING``
        forever.  An order with an attempt still open is left to that attempt's
        expiry (``expire_payment``).
        """
        order = self.get_order(mchid, merchant_order_no)
        if order.status in (OrderStatus.CREATED, OrderStatus.PAYING) and not any(
            p.is_open for p in self._payments(order)
        ):
            order.expire(self.clock())
            self.save(order)
        return order

    @retry_on_conflict
    def resolve_review(
        self,
        mchid: str,
        merchant_order_no: str,
        note: str,
        action: str = "accept",
        by: str = "",
        out_refund_no: str | None = None,
    ) -> Order:
        order = self.get_order(mchid, merchant_order_no)
        if order.resolve_review(note, self.clock(), action, by, out_refund_no):
            self.save(order)
        return order

    @retry_on_conflict
    def note_review(self, mchid: str, merchant_order_no: str, note: str, by: str) -> Order:
        order = self.get_order(mchid, merchant_order_no)
        if order.note_review(note, by, self.clock()):
            self.save(order)
        return order

    def _payments(self, order: Order) -> list[Payment]:
        return [self.get_payment(otn) for otn in order.attempts]

    # -- refunds ---------------------------------------------------------------

    @retry_on_conflict
    def request_refund(
        self,
        mchid: str,
        merchant_order_no: str,
        out_refund_no: str,
        amount_fen: int,
        reason: str = "",
        out_trade_no: str | None = None,
    ) -> Refund:
        """Reserve a refund on the order; idempotent by ``out_refund_no``.

        The reservation is an event on the order, so two concurrent refunds
        cannot together exceed what was paid: one of them loses the race on
        the order's version and is re-checked.
        """
        require_fen(amount_fen, "amount_fen")
        require_key(out_refund_no, "out_refund_no")
        order = self.get_order(mchid, merchant_order_no)
        existing: Refund | None = self._load_optional(ids.refund_id(mchid, out_refund_no))
        if existing is not None:
            if existing.order_id != order.id or existing.amount_fen != amount_fen:
                raise RefundConflict(f"refund {out_refund_no!r} already exists with different terms")
            return existing
        target = out_trade_no or order.paid_out_trade_no
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
            reason=reason,
            requested_at=self.clock(),
        )
        self.save(order, refund)
        return refund

    @retry_on_conflict
    def record_refund_result(
        self,
        mchid: str,
        out_refund_no: str,
        status: str,
        refund_id: str = "",
        success_time: datetime | None = None,
        user_received_account: str = "",
        notification: Notification | None = None,
        settlement_fen: int | None = None,
    ) -> Refund:
        """Apply WeChat's word on a refund: PROCESSING, SUCCESS, CLOSED or ABNORMAL.

        A notification that carried the word is kept in the same transaction
        as what it changed, as for payments.
        """
        refund = self.get_refund(mchid, out_refund_no)
        order: Order = self.repository.get(refund.order_id)
        now = self.clock()
        if notification is not None:
            refund.record_notification(notification, now)
        if status == RefundStatus.PROCESSING:
            refund.submit(refund_id, now)
        elif status == RefundStatus.SUCCESS:
            if refund.succeed(refund_id, success_time or now, user_received_account):
                order.settle_refund(out_refund_no, success_time or now, settlement_fen)
        elif status == RefundStatus.CLOSED:
            if refund.close(refund_id, now):
                order.release_refund(out_refund_no, "closed by WeChat")
        elif status == RefundStatus.ABNORMAL:
            if refund.mark_abnormal(refund_id, now):
                order.refund_abnormal(out_refund_no)
        else:
            raise InvalidInput("status", f"unknown refund status {status!r}")
        self.save(refund, order)
        return refund

    @retry_on_conflict
    def handle_abnormal_refund(self, mchid: str, out_refund_no: str, how: str, note: str, by: str) -> Refund:
        """A person finished an ABNORMAL refund (``Refund.AbnormalHandled``, who and why).

        Settled offline, the refund is done for the order now (the payer has
        their money); re-sent to the merchant's bank card, WeChat's result
        arrives later as for any refund.
        """
        refund = self.get_refund(mchid, out_refund_no)
        order: Order = self.repository.get(refund.order_id)
        now = self.clock()
        if not refund.handle_abnormal(how, note, by, now):
            return refund
        if how == SETTLED_OFFLINE and refund.succeed(refund.refund_id or "", now, f"线下退款：{note}"[:100]):
            order.settle_refund(out_refund_no, now)
        self.save(refund, order)
        return refund

    # -- bills ----------------------------------------------------------------------

    @retry_on_conflict
    def record_bill_import(
        self,
        mchid: str,
        bill_date: date,
        lines: int,
        settled_fen: int,
        refunded_fen: int,
        fee_fen: int,
        sha1: str,
        exchanges: Sequence[Mapping[str, Any]] = (),
    ) -> DailyBill:
        """The day's bill was imported: the journal takes its fee and settlement from this event (the download's
        requests and answers kept beside it)."""
        bill = self._load_optional(DailyBill.create_id(mchid, bill_date.isoformat()))
        bill = bill or DailyBill(mchid=mchid, bill_date=bill_date.isoformat())
        bill.record_wechat_calls(exchanges)
        bill.record_import(lines, settled_fen, refunded_fen, fee_fen, sha1, self.clock())
        self.save(bill)
        return bill

    @retry_on_conflict
    def record_fund_flow_import(
        self,
        mchid: str,
        bill_date: date,
        figures: dict[str, int],
        sha1: str,
        exchanges: Sequence[Mapping[str, Any]] = (),
    ) -> DailyBill:
        """The day's fund flow bill was imported (``DailyBill.FundFlowImported``), its download's evidence beside."""
        bill = self._load_optional(DailyBill.create_id(mchid, bill_date.isoformat()))
        bill = bill or DailyBill(mchid=mchid, bill_date=bill_date.isoformat())
        bill.record_wechat_calls(exchanges)
        bill.record_fund_flow(figures, sha1, self.clock())
        self.save(bill)
        return bill

    def daily_bill(self, mchid: str, bill_date: date) -> DailyBill | None:
        bill: DailyBill | None = self._load_optional(DailyBill.create_id(mchid, bill_date.isoformat()))
        return bill

    @retry_on_conflict
    def acknowledge_difference(self, mchid: str, bill_date: date, difference_id: str, note: str, by: str) -> DailyBill:
        """Finance's explanation of one difference, an event on the day's bill (who, why, when)."""
        bill: DailyBill | None = self._load_optional(DailyBill.create_id(mchid, bill_date.isoformat()))
        if bill is None:
            raise NotFound(f"no bill imported for {bill_date}")
        if bill.acknowledge(difference_id, note, by, self.clock()):
            self.save(bill)
        return bill

    def daily_bills(self) -> list[DailyBill]:
        """Every day's bill ever imported, in the order first imported."""
        return list(self.created(DailyBill.Created.TOPIC))

    def bill_acknowledgements(self, mchid: str, bill_date: date) -> dict[str, dict[str, str]]:
        bill: DailyBill | None = self._load_optional(DailyBill.create_id(mchid, bill_date.isoformat()))
        return dict(bill.acknowledged) if bill is not None else {}

    # -- API keys ---------------------------------------------------------------

    def issue_api_key(self, mchid: str, role: str, expires_at: datetime | None = None) -> str:
        """A new API key for ``mchid`` in ``role``: returned once, only its hash is stored."""
        key, record = apikeys.issue(mchid, role, self.clock(), expires_at)
        self.save(record)
        return key

    def authenticate(self, key: str) -> Principal | None:
        """Who holds ``key``, or None (the same work either way)."""
        return apikeys.authenticate(self.repository.get, key, self.clock())

    def api_keys(self, mchid: str | None = None) -> list[ApiKey]:
        """Every key issued (revoked and expired ones too), oldest first; never a secret, only ids."""
        return [k for k in self.created(ApiKey.Created.TOPIC) if mchid is None or k.mchid == mchid]

    def _api_key(self, key_id: str) -> ApiKey:
        try:
            return self.repository.get(ApiKey.create_id(key_id))
        except AggregateNotFoundError:
            raise NotFound(f"API key {key_id!r} not found") from None

    @retry_on_conflict
    def revoke_api_key(self, key_id: str, reason: str = "revoked") -> ApiKey:
        """The key stops working now, in every worker (each request reads it from the event store)."""
        record = self._api_key(key_id)
        record.revoke(self.clock(), reason)
        self.save(record)
        return record

    @retry_on_conflict
    def rotate_api_key(self, key_id: str, grace: timedelta) -> tuple[str, ApiKey]:
        """A new key with the same merchant and role; the old one keeps working for ``grace``, then expires."""
        old = self._api_key(key_id)
        if not old.usable_at(self.clock()):
            raise Conflict(f"API key {key_id!r} is revoked or expired: create a new one instead")
        key, new = apikeys.issue(old.mchid, old.role, self.clock(), old.expires_at)
        old.expire(self.clock() + grace, f"rotated to {new.key_id}")
        self.save(old, new)
        return key, new

    # -- Native mode 1 products ------------------------------------------------------

    @retry_on_conflict
    def save_product(
        self, mchid: str, product_id: str, amount_fen: int, description: str, active: bool = True
    ) -> tuple[Product, bool]:
        """Create a product, or change its terms; the same terms again change nothing.  Says if it is new."""
        existing: Product | None = self._load_optional(Product.create_id(mchid, product_id))
        if existing is None:
            product = Product.new(mchid, product_id, amount_fen, description, self.clock())
            if not active:
                product.change(amount_fen, description, False, self.clock())
            self.save(product)
            return product, True
        if existing.change(amount_fen, description, active, self.clock()):
            self.save(existing)
        return existing, False

    def get_product(self, mchid: str, product_id: str) -> Product:
        product: Product | None = self._load_optional(Product.create_id(mchid, product_id))
        if product is None or product.mchid != mchid:
            raise ProductNotFound(mchid, product_id)
        return product

    def products(self, mchid: str, limit: int = 10_000) -> list[Product]:
        """A merchant's catalogue, oldest first (catalogues are small: hundreds, not millions)."""
        topic = Product.Created.TOPIC
        found: list[Product] = [
            self.repository.get(ids.as_uuid(n.originator_id))
            for n in self.recorder.select_notifications(1, limit, topics=[topic])
        ]
        return [p for p in found if p.mchid == mchid]

    # -- audit --------------------------------------------------------------------

    def record_refused_callback(
        self, path: str, remote: str, headers: dict[str, str], body: bytes, reason: str, mchid: str | None = None
    ) -> RefusedCallback:
        """Keep a refused callback, bounded: who sent it, when, why, its headers, its first 4 KB and hash, and the
        merchant whose notify path it came to (None on a shared path)."""
        refused = RefusedCallback.of(path, remote, dict(headers), body, reason, self.clock(), mchid)
        try:
            self.save(refused)
        except IntegrityError:
            pass  # the very same refusal at the very same instant: already kept
        return refused

    def refused_callbacks(self, limit: int = 1000) -> list[RefusedCallback]:
        return list(itertools.islice(self.refused_callbacks_since(), limit))

    def refused_callbacks_since(self, after: int = 0, page: int = 500) -> Iterator[RefusedCallback]:
        """Every refused callback kept, oldest first, read page by page from the log."""
        return self.created(RefusedCallback.Created.TOPIC, after, page)

    def refused_callbacks_seen_by(
        self,
        mchid: str | None,
        reason: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[RefusedCallback]:
        """The refusals one merchant's auditor may read (``mchid``), or every one (None: the deployment's
        operator), oldest first, filtered by time and reason words.

        A refusal is attributed by the notify path it came to (``/wechatpay/v3/notify/{mchid}``), before any
        signature is checked; one on a shared path names no merchant and only the operator sees it.
        """
        wanted = reason.lower()
        return [
            r
            for r in self.refused_callbacks_since()
            if (mchid is None or r.mchid == mchid)
            and (since is None or r.received_at >= since)
            and (until is None or r.received_at < until)
            and wanted in r.reason.lower()
        ]

    # -- reads for people --------------------------------------------------------

    def order_view(self, mchid: str, merchant_order_no: str) -> OrderView:
        return self.view_of(self.get_order(mchid, merchant_order_no))

    def view_of(self, order: Order, *known: Payment) -> OrderView:
        """The order's view; payments already in hand are not loaded again."""
        have = {p.out_trade_no: p for p in known}
        payments = [have.get(otn) or self.get_payment(otn) for otn in order.attempts]
        return order_view(order, payments, self._refunds(order))

    def views_of_many(self, order_ids: Iterable[UUID], streams: Streams | None = None) -> dict[UUID, OrderView]:
        """Several orders' views from two queries: the orders, then all their payments and refunds.

        ``streams`` reads the events (a projection passes one that shares them with the others).
        """
        read = streams or self.streams
        orders: dict[UUID, Order] = {i: replay(None, events) for i, events in read(order_ids).items()}
        related = {
            i: replay(None, events)
            for i, events in read(i for order in orders.values() for i in self._related_ids(order)[1:]).items()
        }
        return {
            order_id: order_view(
                order,
                [related[ids.payment_id(otn)] for otn in order.attempts],
                [related[ids.refund_id(order.mchid, no)] for no in order.refunds],
            )
            for order_id, order in orders.items()
        }

    def views_at_many(
        self, wanted: Iterable[tuple[UUID, datetime]], streams: Streams | None = None
    ) -> list[OrderView | None]:
        """The order views as they stood at each moment (None before the order existed), from the events alone:
        two queries for all of them, the rest in memory."""
        wanted = list(wanted)
        read = streams or self.streams
        found = dict(read(order_id for order_id, _ in wanted))
        now = {order_id: replay(None, events) for order_id, events in found.items()}
        found |= read(i for order in now.values() for i in self._related_ids(order)[1:])
        return [self._view_at(found, order_id, as_of) for order_id, as_of in wanted]

    @staticmethod
    def _view_at(streams: dict[UUID, list[DomainEvent]], order_id: UUID, as_of: datetime) -> OrderView | None:
        def at(aggregate_id: UUID) -> Any:
            events = streams.get(aggregate_id, [])
            version = version_at(events, as_of)
            return None if version is None else replay(None, events[:version])

        order: Order | None = at(order_id)
        if order is None:
            return None
        payments = [at(ids.payment_id(otn)) for otn in order.attempts]
        refunds = [at(ids.refund_id(order.mchid, no)) for no in order.refunds]
        return order_view(order, _present(payments), _present(refunds))

    def _refunds(self, order: Order) -> list[Refund]:
        return [self.get_refund(order.mchid, no) for no in order.refunds]

    def _related_ids(self, order: Order) -> list[UUID]:
        return [
            order.id,
            *(ids.payment_id(otn) for otn in order.attempts),
            *(ids.refund_id(order.mchid, no) for no in order.refunds),
        ]

    def find_order_no(self, mchid: str, number: str) -> str | None:
        """The merchant order number that ``number`` names: itself, a payment's out_trade_no, or WeChat's
        transaction_id (what a payer reads off their receipt) — within ``mchid``'s orders only."""
        number = number.strip()
        if not number:
            return None
        try:
            return self.get_order(mchid, number).merchant_order_no
        except OrderNotFound:
            pass
        index: TransactionIndex | None = self._load_optional(ids.transaction_index_id(number))
        out_trade_no = index.out_trade_no if index is not None else number
        payment: Payment | None = self._load_optional(ids.payment_id(out_trade_no))
        if payment is None or payment.mchid != mchid:
            return None
        return str(payment.merchant_order_no)

    def order_history(self, mchid: str, merchant_order_no: str, as_of: datetime | None = None) -> list[HistoryEvent]:
        """Every event of the order, its payments and its refunds, oldest first."""
        order = self.get_order(mchid, merchant_order_no)
        streams = [self._events(i) for i in self._related_ids(order)]
        return history_events(streams, as_of)

    def order_state_as_of(self, mchid: str, merchant_order_no: str, as_of: datetime) -> OrderView:
        """The order view as it stood at ``as_of``, rebuilt from the events alone."""
        (view,) = self.views_at_many([(ids.order_id(mchid, merchant_order_no), as_of)])
        if view is None:
            raise OrderNotFound(mchid, merchant_order_no)
        return view

    def _events(self, aggregate_id: UUID) -> list[DomainEvent]:
        # The store hands back the library's protocol type; every event we store is a ``DomainEvent``.
        return cast(list[DomainEvent], list(self.repository.event_store.get(aggregate_id)))


def _present(items: Iterable[Any]) -> list[Any]:
    return [item for item in items if item is not None]
