"""The use cases that need WeChat Pay, wired end to end.

The rule for every one of them: record what we intend, call WeChat with no
database transaction open, record what WeChat said.  A notification and a
query answer go through the same translation (``apply_transaction``), so
they can never disagree about what they change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from adapters.sessions import SessionKeys
from adapters.wechatpay import oauth
from adapters.wechatpay.beijing import beijing_iso
from adapters.wechatpay.client import PrepayRequest, PrepayResult, WechatPayClient
from adapters.wechatpay.config import Merchant
from adapters.wechatpay.errors import (
    MerchantConfigError,
    WechatPayBusinessError,
    WechatPayError,
    WechatPayNotFound,
    WechatPayRateLimited,
    WechatPayUnavailable,
)
from adapters.wechatpay.evidence import Exchange, captured
from adapters.wechatpay.gateway import Gateway
from adapters.wechatpay.miniprogram import DEFAULT_BASE_URL, MiniProgramSession, code_to_session
from adapters.wechatpay.v2_client import WechatPayV2Client
from application.orders import PaymentOutcome
from application.rooms import Rooms
from application.views import OrderView
from domain import ids
from domain.errors import ConcurrencyConflict, Conflict, InvalidInput, InvalidTransition
from domain.limits import NewOrder
from domain.notices import RefundNotice, TransactionNotice
from domain.notification import Notification
from domain.order import RULES as ORDER_RULES
from domain.order import Order
from domain.payment import Payment
from domain.refund import ABNORMAL_HANDLING, TO_MERCHANT_BANK_CARD, Refund
from domain.status import OrderStatus, PaymentStatus, RefundStatus
from domain.transitions import guard

log = logging.getLogger("zhangben.payments")

REVIEW_ACTIONS = ("accept", "refund")
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


class PaymentService:
    """Each use case once; the merchant's ``api`` setting picks the v3 or the v2 client (``Gateway``)."""

    def __init__(
        self,
        rooms: Rooms,
        client: WechatPayClient,
        login_base_url: str = DEFAULT_BASE_URL,
        v2: WechatPayV2Client | None = None,
        open_base_url: str = oauth.DEFAULT_OPEN_BASE_URL,
        session_keys: SessionKeys | None = None,
    ) -> None:
        self.ledger = rooms.store  # loading
        self.orders, self.refunds, self.reviews, self.reads = rooms.orders, rooms.refunds, rooms.reviews, rooms.reads
        self.open_base_url = open_base_url  # WeChat's web authorisation page (open.weixin.qq.com)
        self.session_keys = session_keys
        self.client = client
        self.v2 = v2
        self.login_base_url = login_base_url  # the mini-program login API's host (api.weixin.qq.com)
        self._merchants: dict[str, Merchant] = {**client.merchants, **(v2.merchants if v2 else {})}

    @property
    def merchants(self) -> Mapping[str, Merchant]:
        """Every configured merchant, v3 and v2, by the id its orders are kept under."""
        return self._merchants

    def merchant(self, mchid: str) -> Merchant:
        try:
            return self._merchants[mchid]
        except KeyError:
            raise MerchantConfigError(f"merchant {mchid} is not configured") from None

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
        app = self.app_for(merchant, request.terms.channel, request.appid)
        opened = self.orders.open_order(replace(request, appid=app))
        checkout = self._checkout(merchant, opened.order, opened.payment, request.client_ip, request.product_id)
        return OrderAnswer(opened.order, self.reads.view_of(opened.order, checkout.payment), checkout, opened.created)

    def new_payment(
        self,
        mchid: str,
        merchant_order_no: str,
        channel: str | None = None,
        payer_openid: str | None = None,
        client_ip: str = "127.0.0.1",
        appid: str | None = None,
    ) -> Checkout:
        """A fresh attempt (new ``out_trade_no``); the open ones are closed at WeChat first."""
        return self.open_attempt(mchid, merchant_order_no, channel, payer_openid, client_ip, appid).checkout

    def open_attempt(
        self,
        mchid: str,
        merchant_order_no: str,
        channel: str | None = None,
        payer_openid: str | None = None,
        client_ip: str = "127.0.0.1",
        appid: str | None = None,
    ) -> OrderAnswer:
        """``POST /v1/orders/{no}/payments``: a fresh attempt, answered with the order view."""
        merchant = self.merchant(mchid)
        order = self.ledger.get_order(mchid, merchant_order_no)
        guard(ORDER_RULES, "order", merchant_order_no, "start a payment attempt", order.status)
        seen = order  # one open attempt per order: a concurrent request that gets in first wins
        if self._close_open_attempts(merchant, order, "replaced by a new payment attempt"):
            order = self.ledger.get_order(mchid, merchant_order_no)
            raise InvalidTransition("order", merchant_order_no, "start a payment attempt", order.status.value)
        if appid is not None:
            self.app_for(merchant, channel or order.channel, appid)  # an unknown appid is refused before anything
        payment = self.orders.start_payment(
            seen, channel, payer_openid, lambda chosen: self.app_for(merchant, chosen, appid)
        )
        order = self.ledger.get_order(mchid, merchant_order_no)
        checkout = self._checkout(merchant, order, payment, client_ip)
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
                self._keep(payment.id, calls)  # what was asked, and WeChat's refusal
                raise
        try:  # the request and its answer are kept in the same save as the prepay
            payment = self.orders.record_prepay(
                payment.out_trade_no, result.prepay_id, result.code_url, result.h5_url, _data(calls)
            )
        except InvalidTransition:
            # closed by a concurrent request while this prepay was on its way: WeChat has just opened it, so
            # close it there too, or a payer could pay an attempt the ledger calls closed
            self._keep(payment.id, calls)
            with self._evidence(payment.id):
                self._close_at_wechat(merchant, payment.out_trade_no)
            raise
        return Checkout(payment, result)

    @contextmanager
    def _evidence(self, aggregate_id: UUID) -> Iterator[None]:
        """Keep on ``aggregate_id`` every request to WeChat made in the block, and the answers (or failures)."""
        with captured() as calls:
            try:
                yield
            finally:
                self._keep(aggregate_id, calls)

    def _keep(self, aggregate_id: UUID, calls: Sequence[Exchange]) -> None:
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
                        self._keep(payment.id, calls)  # the refusal is evidence too
                        raise
                if paid_at_wechat:
                    self._keep(payment.id, calls)
                    paid = True
                    break
                # closed twice (a concurrent request) is closed once; prepaid since WeChat was asked: ask again.
                # The close's request and answer are kept in the same save as the close.
                if self.orders.close_payment(out_trade_no, reason, payment.state_version, _data(calls)) is not None:
                    break
                self._keep(payment.id, calls)
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
            with self._evidence(payment.id):
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

    def sync_payment(self, merchant: Merchant, out_trade_no: str) -> PaymentOutcome | None:
        try:
            with self._evidence(ids.payment_id(out_trade_no)):
                notice = self.wechat(merchant).transaction(merchant, out_trade_no)
        except WechatPayNotFound:
            return None  # WeChat never saw this attempt
        return self.apply_transaction(notice, "query")

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
        if notice.trade_state == "CLOSED" and payment.is_open:
            self.orders.close_payment(notice.out_trade_no, "closed at WeChat")
        elif notice.trade_state == "PAYERROR" and payment.is_open:
            self.orders.record_payment_failure(notice.out_trade_no, "PAYERROR", notice.trade_state_desc)
        return None

    # -- the payer's openid ------------------------------------------------------------------

    def miniprogram_login(self, mchid: str, code: str, appid: str | None = None) -> MiniProgramSession:
        """``wx.login``'s code → the payer's openid, with the mini-program's appid and appsecret.

        The session key WeChat returns is kept server-side (``SessionKeys``),
        shared by the workers and kept across restarts; it is never answered.
        """
        app = self._app_with_secret(mchid, "miniprogram", appid, "mini-program login")
        session = code_to_session(self.client.http, self.login_base_url, app.payer_appid, app.appsecret or "", code)
        if self.session_keys is not None:
            self.session_keys.keep(app.payer_appid, session.openid, session.session_key, self.ledger.clock())
        return session

    def oauth_authorize_url(self, mchid: str, redirect_uri: str, state: str, appid: str | None = None) -> str:
        """Where a 公众号 page sends the payer's browser for ``snsapi_base`` (the openid, asking nothing)."""
        if not oauth.check_redirect_uri(redirect_uri):
            raise InvalidInput("redirect_uri", "redirect_uri must be an absolute http(s) URL without a fragment")
        app = self.merchant(mchid).with_app(self.app_for(self.merchant(mchid), "jsapi", appid))
        return oauth.authorize_url(self.open_base_url, app.payer_appid, redirect_uri, state)

    def oauth_openid(self, mchid: str, code: str, appid: str | None = None) -> tuple[str, str]:
        """The code WeChat sent back to the redirect_uri → (openid, appid): the payer's id in the 公众号."""
        app = self._app_with_secret(mchid, "jsapi", appid, "web authorisation")
        openid = oauth.code_to_openid(self.client.http, self.login_base_url, app.payer_appid, app.appsecret or "", code)
        return openid, app.payer_appid

    def _app_with_secret(self, mchid: str, channel: str, appid: str | None, what: str) -> Merchant:
        merchant = self.merchant(mchid)
        app = merchant.with_app(self.app_for(merchant, channel, appid))
        if not app.appsecret:
            raise Conflict(
                f"no appsecret_file is configured for app {app.payer_appid} of merchant {mchid}: {what} needs it"
            )
        return app

    # -- refunds ------------------------------------------------------------------------------

    def refund(
        self,
        mchid: str,
        merchant_order_no: str,
        out_refund_no: str,
        amount_fen: int,
        reason: str = "",
        out_trade_no: str | None = None,
    ) -> Refund:
        """Reserve the refund in the ledger (durably), then ask WeChat, then record its answer.

        ``out_trade_no`` names the payment to give money back from (a duplicate
        payment); without it, the payment that paid the order.
        """
        self.merchant(mchid)
        refund = self.refunds.request_refund(mchid, merchant_order_no, out_refund_no, amount_fen, reason, out_trade_no)
        if refund.status is not RefundStatus.REQUESTED:
            return refund
        return self.submit_refund(mchid, out_refund_no)

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
        self.merchant(mchid)
        if action == "accept":
            return self.reviews.resolve_review(mchid, merchant_order_no, note, "accept", by)
        order = self.ledger.get_order(mchid, merchant_order_no)
        out_refund_no, target, amount = order.review_refund(out_trade_no)  # a retry finds the refund it made
        refund = self.refund(mchid, merchant_order_no, out_refund_no, amount, note[:80], target)
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
        merchant = self.merchant(mchid)
        refund = self.ledger.get_refund(mchid, out_refund_no)
        if not refund.needs_handling(how, note, by):
            return refund
        if how == TO_MERCHANT_BANK_CARD:
            if merchant.is_v2 or not refund.refund_id:
                raise InvalidInput("action", "WeChat re-sends an abnormal refund only on API v3: settle it offline")
            with self._evidence(refund.id):
                self.client.apply_abnormal_refund(merchant, refund.refund_id, out_refund_no)
        return self.refunds.handle_abnormal_refund(mchid, out_refund_no, how, note, by)

    def submit_refund(self, mchid: str, out_refund_no: str) -> Refund:
        merchant = self.merchant(mchid)
        refund = self.ledger.get_refund(mchid, out_refund_no)
        try:
            with self._evidence(refund.id):
                notice = self.wechat(merchant).request_refund(
                    merchant, refund.out_trade_no, out_refund_no, refund.amount_fen, refund.total_fen, refund.reason
                )
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
        merchant = self.merchant(mchid)
        refund = self.ledger.get_refund(mchid, out_refund_no)
        try:
            with self._evidence(refund.id):
                notice = self.wechat(merchant).refund_status(merchant, out_refund_no)
        except WechatPayNotFound:
            return self.submit_refund(mchid, out_refund_no) if refund.status is RefundStatus.REQUESTED else refund
        return self.apply_refund(mchid, notice)

    def apply_refund(self, mchid: str, notice: RefundNotice, notification: Notification | None = None) -> Refund:
        """The one translation of WeChat's word on a refund; a notification is kept in the same save."""
        return self.refunds.record_refund_result(mchid, notice, notification)


def _data(calls: Sequence[Exchange]) -> list[dict[str, Any]]:
    return [call.as_data() for call in calls]
