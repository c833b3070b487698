"""The use cases that need WeChat Pay, wired end to end.

The rule for every one of them: record what we intend, call WeChat with no
database transaction open, record what WeChat said.  A notification and a
query answer go through the same translation (``apply_transaction``), so
they can never disagree about what they change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from adapters.wechatpay.beijing import beijing_iso
from adapters.wechatpay.client import PrepayRequest, PrepayResult, WechatPayClient
from adapters.wechatpay.config import Merchant
from adapters.wechatpay.errors import (
    MerchantConfigError,
    WechatPayBusinessError,
    WechatPayError,
    WechatPayNotFound,
)
from adapters.wechatpay.evidence import Exchange, captured
from adapters.wechatpay.gateway import Gateway
from adapters.wechatpay.merchant_book import MerchantBook
from adapters.wechatpay.v2_client import WechatPayV2Client
from application.orders import PaymentOutcome
from application.rooms import Rooms
from application.views import OrderView
from domain import ids
from domain.checkout import require_return_url
from domain.errors import ConcurrencyConflict, Forbidden, InvalidInput, InvalidTransition, NotFound
from domain.limits import require_transaction_id
from domain.notices import TransactionNotice
from domain.notification import Notification
from domain.order import RULES as ORDER_RULES
from domain.order import Order
from domain.payment import Payment
from domain.requests import NewAttempt, NewOrder
from domain.status import OrderStatus, PaymentStatus
from domain.transitions import guard

log = logging.getLogger("zhangben.payments")

CLOSE_ROUNDS = 5  # an attempt that moves (prepaid by its own request) while it is closed is asked about again


@dataclass(frozen=True)
class Checkout:
    """A payment attempt and what the payer's side needs to pay it."""

    payment: Payment
    prepay: PrepayResult | None

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "out_trade_no": self.payment.out_trade_no,
            "status": self.payment.status.value,
            "channel": self.payment.channel,
            "expire_at": beijing_iso(self.payment.expire_at),
        }
        if self.prepay is not None:
            for key in ("code_url", "h5_url", "pay_params", "app_params"):
                value = getattr(self.prepay, key)
                if value is not None:
                    view[key] = value
        return view


@dataclass(frozen=True)
class OrderAnswer:
    """What creating an order (or a new attempt) answers: the order and its view, the attempt, whether it is new."""

    order: Order
    view: OrderView
    checkout: Checkout
    created: bool = True

    def __iter__(self) -> Iterator[Order | Checkout]:
        """Unpacks as ``order, checkout``: what scripts and tests mostly want."""
        return iter((self.order, self.checkout))

    def as_json(self) -> dict[str, Any]:
        return {**self.view, "payment": self.checkout.view()}


def qr_seconds(merchant: Merchant) -> int | None:
    """How long each of the merchant's QR codes (attempts) lives (``qr_ttl_minutes``); None: the order's lifetime."""
    return merchant.qr_ttl_minutes * 60 if merchant.qr_ttl_minutes else None


class PaymentService:
    """Each use case once; the merchant's ``api`` setting picks the v3 or the v2 client (``Gateway``)."""

    def __init__(self, rooms: Rooms, client: WechatPayClient, v2: WechatPayV2Client | None = None) -> None:
        self.ledger = rooms.store  # loading
        self.orders, self.reads = rooms.orders, rooms.reads
        self.client = client
        self.v2 = v2
        self._merchants: MerchantBook = client.book  # the v2 client's is the same book (bootstrap.wiring)

    @property
    def merchants(self) -> MerchantBook:
        """Every merchant, v3 and v2, configured or a provider's sub-merchant, by the id its orders are kept under."""
        return self._merchants

    def merchant(self, mchid: str) -> Merchant:
        """The merchant, also one a provider added a moment ago in another process (``MerchantBook.catch_up``)."""
        merchant = self._merchants.get(mchid)
        if merchant is None and self._merchants.catch_up():
            merchant = self._merchants.get(mchid)
        if merchant is None:
            raise MerchantConfigError(f"merchant {mchid} is not configured")
        return merchant

    def wechat(self, merchant: Merchant) -> Gateway:
        """The client that speaks this merchant's API version."""
        if merchant.is_v2:
            if self.v2 is None:
                raise MerchantConfigError(f"merchant {merchant.mchid} is on API v2, and no v2 client is wired")
            return self.v2
        return self.client

    # -- orders and attempts ---------------------------------------------------------

    def create_order(self, request: NewOrder) -> OrderAnswer:
        """``POST /v1/orders``: the order (new, or the same request again) with its prepaid attempt.

        The ``Idempotency-Key`` is checked and kept by the ledger in the same
        transaction as the order; the order is loaded once.
        """
        merchant = self.merchant(request.mchid)
        if not merchant.active:
            raise Forbidden(f"merchant {merchant.mchid} is deactivated: it takes no new orders")
        require_return_url(request.terms.checked().return_url, merchant.return_url_hosts)
        app = self.app_for(merchant, request.terms.channel, request.appid)
        opened = self.orders.open_order(replace(request, appid=app, qr_seconds=qr_seconds(merchant)))
        checkout = self._checkout(merchant, opened.order, opened.payment, request.client_ip, request.product_id)
        return OrderAnswer(opened.order, self.reads.view_of(opened.order, checkout.payment), checkout, opened.created)

    def new_payment(self, request: NewAttempt) -> Checkout:
        """A fresh attempt (new ``out_trade_no``); the open ones are closed at WeChat first."""
        return self.open_attempt(request).checkout

    def open_attempt(self, request: NewAttempt) -> OrderAnswer:
        """``POST /v1/orders/{no}/payments``: a fresh attempt, answered with the order view."""
        mchid, merchant_order_no, appid = request.mchid, request.merchant_order_no, request.appid
        merchant = self.merchant(mchid)
        order = self.ledger.get_order(mchid, merchant_order_no)
        guard(ORDER_RULES, "order", merchant_order_no, "start a payment attempt", order.status)
        seen = order  # one open attempt per order: a concurrent request that gets in first wins
        if self._close_open_attempts(merchant, order, "replaced by a new payment attempt"):
            order = self.ledger.get_order(mchid, merchant_order_no)
            raise InvalidTransition("order", merchant_order_no, "start a payment attempt", order.status.value)
        if appid is not None:
            self.app_for(merchant, request.channel or order.channel, appid)  # an unknown appid is refused first
        payment = self.orders.start_payment(
            seen,
            request.channel,
            request.payer_openid,
            lambda chosen: self.app_for(merchant, chosen, appid),
            qr_seconds(merchant),
        )
        order = self.ledger.get_order(mchid, merchant_order_no)
        checkout = self._checkout(merchant, order, payment, request.client_ip)
        return OrderAnswer(order, self.reads.view_of(order, checkout.payment), checkout)

    def app_for(self, merchant: Merchant, channel: str, appid: str | None) -> str:
        """The appid an attempt pays through: the one the order names, else the app that claims its channel."""
        if appid is None:
            return merchant.app_for_channel(channel)
        if appid not in merchant.payer_appids:
            raise InvalidInput(
                "appid",
                f"appid {appid!r} is not one of merchant {merchant.mchid}'s apps: {list(merchant.payer_appids)}",
            )
        return appid

    def _checkout(
        self, merchant: Merchant, order: Order, payment: Payment, client_ip: str, product_id: str | None = None
    ) -> Checkout:
        merchant = merchant.with_app(payment.appid)  # pay_params are signed for the attempt's own app
        if payment.status is PaymentStatus.PREPAID:
            return Checkout(payment, self._stored_prepay(merchant, payment))
        if payment.status is not PaymentStatus.CREATED:
            return Checkout(payment, None)
        with captured() as calls:
            try:
                result = self.wechat(merchant).prepay(merchant, PrepayRequest.of(payment, order, client_ip, product_id))
            except WechatPayError:
                self.keep(payment.id, calls)  # what was asked, and WeChat's refusal
                raise
        try:  # the request and its answer are kept in the same save as the prepay
            payment = self.orders.record_prepay(payment, result, _data(calls))
        except InvalidTransition:
            # closed by a concurrent request while this prepay was on its way: WeChat has just opened it, so
            # close it there too, or a payer could pay an attempt the ledger calls closed
            self.keep(payment.id, calls)
            with self.evidence(payment.id):
                self._close_at_wechat(merchant, payment.out_trade_no)
            raise
        return Checkout(payment, result)

    @contextmanager
    def evidence(self, aggregate_id: UUID) -> Iterator[None]:
        """Keep on ``aggregate_id`` every request to WeChat made in the block, and the answers (or failures)."""
        with captured() as calls:
            try:
                yield
            finally:
                self.keep(aggregate_id, calls)

    def keep(self, aggregate_id: UUID, calls: Sequence[Exchange]) -> None:
        if calls:
            self.ledger.record_wechat_calls(aggregate_id, _data(calls))

    def _stored_prepay(self, merchant: Merchant, payment: Payment) -> PrepayResult:
        """A repeated request gets what was prepaid; the client-side signatures are made afresh."""
        wechat = self.wechat(merchant)
        if payment.channel in ("jsapi", "miniprogram") and payment.prepay_id:
            return PrepayResult(prepay_id=payment.prepay_id, pay_params=wechat.pay_params(merchant, payment.prepay_id))
        if payment.channel == "app" and payment.prepay_id:
            return PrepayResult(prepay_id=payment.prepay_id, app_params=wechat.app_params(merchant, payment.prepay_id))
        return PrepayResult(prepay_id=payment.prepay_id, code_url=payment.code_url, h5_url=payment.h5_url)

    def close_order(self, mchid: str, merchant_order_no: str) -> Order:
        """Close at WeChat, then in the ledger; if WeChat says it was paid, record that instead."""
        merchant = self.merchant(mchid)
        order = self.ledger.get_order(mchid, merchant_order_no)
        if order.status is OrderStatus.CLOSED:
            return order
        guard(ORDER_RULES, "order", merchant_order_no, "close", order.status)
        if self._close_open_attempts(merchant, order, "closed by merchant"):
            order = self.ledger.get_order(mchid, merchant_order_no)
            raise InvalidTransition("order", merchant_order_no, "close", order.status.value)
        return self.orders.close_order(mchid, merchant_order_no)

    def _close_open_attempts(self, merchant: Merchant, order: Order, reason: str) -> bool:
        """Close every open attempt at WeChat, then in the ledger; True if one of them turned out to be paid."""
        paid = False
        for out_trade_no in order.attempts:
            for _ in range(CLOSE_ROUNDS):
                payment = self.ledger.get_payment(out_trade_no)
                if not payment.is_open:
                    break
                with captured() as calls:
                    try:
                        paid_at_wechat = self._close_at_wechat(merchant, out_trade_no)
                    except WechatPayError:
                        self.keep(payment.id, calls)  # the refusal is evidence too
                        raise
                if paid_at_wechat:
                    self.keep(payment.id, calls)
                    paid = True
                    break
                # closed twice (a concurrent request) is closed once; prepaid since WeChat was asked: ask again.
                # The close's request and answer are kept in the same save as the close.
                if self.orders.close_payment(out_trade_no, reason, payment.state_version, _data(calls)) is not None:
                    break
                self.keep(payment.id, calls)
            else:
                raise ConcurrencyConflict(f"attempt {out_trade_no} kept changing while it was being closed; retry")
        return paid

    def _close_at_wechat(self, merchant: Merchant, out_trade_no: str) -> bool:
        """Close one attempt at WeChat; True (and the payment recorded) if WeChat says it was paid."""
        try:
            self.wechat(merchant).close(merchant, out_trade_no)
        except WechatPayNotFound:
            pass  # never reached WeChat (or not yet: the caller's version check covers a prepay in flight)
        except WechatPayBusinessError as exc:
            if exc.is_code("ORDERPAID"):
                self.sync_payment(merchant, out_trade_no)
                return True
            if not exc.is_code("ORDER_CLOSED"):
                raise
        return False

    def expire_attempt(self, mchid: str, out_trade_no: str) -> Payment:
        """Close a timed-out attempt at WeChat, then record it expired — or paid, if WeChat says so."""
        merchant = self.merchant(mchid)
        payment = self.ledger.get_payment(out_trade_no)
        if not payment.is_open:
            return payment
        try:
            with self.evidence(payment.id):
                self.wechat(merchant).close(merchant, out_trade_no)
        except WechatPayNotFound:
            pass  # never reached WeChat
        except WechatPayBusinessError as exc:
            if exc.is_code("ORDERPAID"):
                self.sync_payment(merchant, out_trade_no)  # paid in its last second: a payment, not an expiry
                return self.ledger.get_payment(out_trade_no)
            if not exc.is_code("ORDER_CLOSED"):
                raise
        return self.orders.expire_payment(out_trade_no)

    # -- what WeChat says about payments ----------------------------------------------------

    def sync(self, mchid: str, merchant_order_no: str) -> OrderView:
        """ "I have paid": ask WeChat about every attempt not known to be paid, and apply the answers."""
        merchant = self.merchant(mchid)
        order = self.ledger.get_order(mchid, merchant_order_no)
        for out_trade_no in order.attempts:
            if self.ledger.get_payment(out_trade_no).status is not PaymentStatus.PAID:
                self.sync_payment(merchant, out_trade_no)
        return self.reads.order_view(mchid, merchant_order_no)

    def find_by_transaction(self, mchid: str, transaction_id: str) -> OrderView:
        """The order WeChat's ``transaction_id`` paid (a payer's receipt, a bill line): from the ledger's own index,
        else by asking WeChat (https://pay.weixin.qq.com/doc/v3/merchant/4012791858) — and what WeChat answers is
        applied like any query's answer, so a payment the ledger never heard of is recorded, not only found."""
        require_transaction_id(transaction_id)
        payment = self.reads.paid_by(mchid, transaction_id)
        if payment is None:
            payment = self._ask_by_transaction(mchid, transaction_id)
        return self.reads.order_view(mchid, payment.merchant_order_no)

    def _ask_by_transaction(self, mchid: str, transaction_id: str) -> Payment:
        merchant = self.merchant(mchid)
        with captured() as calls:
            try:
                notice = self.wechat(merchant).transaction_by_id(merchant, transaction_id)
            except WechatPayNotFound:
                raise NotFound(f"WeChat Pay knows no transaction {transaction_id} of merchant {mchid}") from None
        payment = self.reads.payment(mchid, notice.out_trade_no)
        if payment is None:
            raise NotFound(
                f"transaction {transaction_id} paid out_trade_no {notice.out_trade_no}, which the ledger did not issue"
            )
        self.keep(payment.id, calls)  # what was asked and what WeChat answered, on the payment
        self.apply_transaction(notice, "query", mchid=mchid)
        return payment

    def sync_payment(self, merchant: Merchant, out_trade_no: str) -> PaymentOutcome | None:
        try:
            with self.evidence(ids.payment_id(out_trade_no)):
                notice = self.wechat(merchant).transaction(merchant, out_trade_no)
        except WechatPayNotFound:
            return None  # WeChat never saw this attempt
        return self.apply_transaction(notice, "query")

    async def apply_transaction_async(
        self,
        notice: TransactionNotice,
        source: str,
        notification: Notification | None = None,
        mchid: str | None = None,
    ) -> PaymentOutcome | None:
        """``apply_transaction`` from the event loop: money taken is recorded through the store's async path
        (no thread hop: a callback's hot path); anything else, or a store without one, on a thread as before."""
        store = self.ledger.async_store
        if store is not None and notice.took_money:
            return await self.orders.record_payment_success_async(store, notice, source, notification, mchid)
        return await asyncio.to_thread(self.apply_transaction, notice, source, notification, mchid)

    def apply_transaction(
        self,
        notice: TransactionNotice,
        source: str,
        notification: Notification | None = None,
        mchid: str | None = None,
    ) -> PaymentOutcome | None:
        """The one translation of WeChat's word on a payment into ledger commands."""
        if notice.took_money:
            return self.orders.record_payment_success(notice, source, notification, mchid)
        payment = self.ledger.get_payment(notice.out_trade_no)
        if notice.closed and payment.is_open:
            self.orders.close_payment(notice.out_trade_no, "closed at WeChat")
        elif notice.failed and payment.is_open:
            self.orders.record_payment_failure(notice.out_trade_no, notice.trade_state, notice.trade_state_desc)
        return None


def _data(calls: Sequence[Exchange]) -> list[dict[str, Any]]:
    return [call.as_data() for call in calls]
