"""WeChat's callbacks, one way through: verify and translate (adapter), dispatch (here), one save.

``Callbacks.handle`` returns only after what the callback said is durably
stored (rule 5: WeChat hears "success" only then); a callback that cannot
be accepted is refused and the refusal itself is kept for audit (rule 3).
The adapter refuses what it can see (a bad signature, content that is not
WeChat's); this layer refuses what only the ledger knows (an ``out_trade_no``
or ``out_refund_no`` it never issued for that merchant).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial

from adapters.refusals import RefusalCounter
from adapters.wechatpay.callbacks import Callback, CallbackRejected, read_callback
from adapters.wechatpay.config import Merchant
from adapters.wechatpay.errors import SignatureError
from adapters.wechatpay.platform import PlatformKeys
from adapters.wechatpay.v2_callbacks import read_pay_notify, read_refund_notify
from application.audit import Audit
from application.payments import PaymentService
from application.refunding import RefundService
from domain.audit import Arrival
from domain.errors import LedgerError, PaymentNotFound, RefundNotFound
from domain.notices import RefundNotice, TransactionNotice

log = logging.getLogger("zhangben.callbacks")


class CallbackRefused(LedgerError):
    """A verified callback about something the ledger does not hold for that merchant."""


class RefusalsThrottled(LedgerError):
    """Too many refused callbacks from one source this minute: counted, not kept (a flood cannot fill the store)."""

    def __init__(self, source: str) -> None:
        super().__init__(f"too many refused callbacks from {source} this minute; try later")
        self.source = source


@dataclass(frozen=True)
class NotificationOutcome:
    event_type: str
    out_trade_no: str
    changed: bool


class Callbacks:
    """Every callback's way through, given its parts at wiring time."""

    def __init__(
        self,
        payments: PaymentService,
        refunding: RefundService,
        audit: Audit,
        keys: Mapping[str, PlatformKeys],
        refusals: RefusalCounter | None = None,
    ) -> None:
        self.payments = payments
        self.refunding = refunding
        self.audit = audit  # where refusals are kept
        self.keys = keys  # WeChat's keys per merchant (the v3 client's), to verify v3 notifications
        self.refusals = refusals  # per-source counts and the limit on refusals kept (None: keep every one)
        # the Callbacks of a merchant's partition (docs/scale-out.md): a callback names its merchant once read,
        # and is applied there; one partition: this one
        self.route: Callable[[str], Callbacks] = lambda merchant: self
        # each API's merchants, once: a notification is verified against its own API's only
        self.v3_merchants = payments.merchants.on_api("v3")  # views of the one book: sub-merchants added live
        self.v2_merchants = payments.merchants.on_api("v2")
        # event type → use case: every type the adapter translates has exactly one.
        self.dispatch: dict[str, Callable[[Callback], NotificationOutcome]] = {
            "TRANSACTION.SUCCESS": self.payment_succeeded,
            "REFUND.SUCCESS": self.refund_settled,
            "REFUND.ABNORMAL": self.refund_settled,
            "REFUND.CLOSED": self.refund_settled,
        }

    def handle(self, arrival: Arrival) -> NotificationOutcome:
        """A v3 notification: verify, translate, apply — or refuse, keep the refusal, and raise.

        ``arrival.mchid`` is the merchant the notify path names (``/wechatpay/v3/notify/{merchant}``): only its
        keys are tried, and a refusal is that merchant's; without it (the shared path) every v3 merchant's are.
        """
        read = partial(read_callback, arrival.headers, arrival.body, keys=self.keys)
        return self._apply(read, self.v3_merchants, arrival)

    def handle_v2_pay(self, arrival: Arrival) -> NotificationOutcome:
        """A v2 pay result (signed XML), the same way through."""
        return self._apply(partial(read_pay_notify, arrival.headers, arrival.body), self.v2_merchants, arrival)

    def handle_v2_refund(self, arrival: Arrival) -> NotificationOutcome:
        """A v2 refund result (``req_info``), the same way through."""
        return self._apply(partial(read_refund_notify, arrival.headers, arrival.body), self.v2_merchants, arrival)

    async def handle_async(self, arrival: Arrival) -> NotificationOutcome:
        """``handle`` from the event loop (``serve``'s workers): see ``_apply_async``."""
        read = partial(read_callback, arrival.headers, arrival.body, keys=self.keys)
        if not self._keys_known(arrival):  # an unknown serial may download WeChat's certificates: not on the loop
            return await asyncio.to_thread(self._apply, read, self.v3_merchants, arrival)
        return await self._apply_async(read, self.v3_merchants, arrival)

    async def handle_v2_pay_async(self, arrival: Arrival) -> NotificationOutcome:
        """``handle_v2_pay`` from the event loop (its MD5 or HMAC-SHA256 signature needs no download)."""
        read = partial(read_pay_notify, arrival.headers, arrival.body)
        return await self._apply_async(read, self.v2_merchants, arrival)

    def _keys_known(self, arrival: Arrival) -> bool:
        serial = next((v for k, v in arrival.headers.items() if k.lower() == "wechatpay-serial"), "")
        named = self._named(self.v3_merchants, arrival.mchid)
        return all(self.keys[mchid].knows(serial) for mchid in named if mchid in self.keys)

    async def _apply_async(
        self, read: Callable[[Mapping[str, Merchant]], Callback], merchants: Mapping[str, Merchant], arrival: Arrival
    ) -> NotificationOutcome:
        """``_apply`` without a thread for what a peak is made of: the signature is checked and the resource
        decrypted here (CPU in C, no I/O), and money taken is recorded through the store's async path
        (``PaymentService.apply_transaction_async``); anything else, and a refusal's record, go to a thread."""
        if self._unknown(arrival):  # a sub-merchant added a moment ago in another process: read it first
            await asyncio.to_thread(self.payments.merchants.catch_up)
        try:
            callback = read(self._named(merchants, arrival.mchid))
            desk = self.route(callback.merchant.mchid)
            if callback.event_type != "TRANSACTION.SUCCESS":
                return await asyncio.to_thread(desk.dispatch[callback.event_type], callback)
            notice = callback.notice
            assert isinstance(notice, TransactionNotice)  # noqa: S101 — TRANSLATIONS gives this type for this event
            mchid = callback.merchant.mchid
            try:
                outcome = await desk.payments.apply_transaction_async(
                    notice, "notification", callback.notification, mchid
                )
            except PaymentNotFound:
                raise CallbackRefused(f"unknown out_trade_no {notice.out_trade_no} for merchant {mchid}") from None
            return NotificationOutcome(callback.event_type, notice.out_trade_no, bool(outcome and outcome.changed))
        except (SignatureError, CallbackRejected, CallbackRefused) as exc:
            await asyncio.to_thread(self.refused, arrival, str(exc))
            raise

    def _unknown(self, arrival: Arrival) -> bool:
        """The path names a merchant this process does not know (yet): a provider may have just added it."""
        return arrival.mchid is not None and arrival.mchid not in self.payments.merchants

    @staticmethod
    def _named(merchants: Mapping[str, Merchant], merchant: str | None) -> Mapping[str, Merchant]:
        """Every merchant of that API, or only the one a notify path names (none if it names another)."""
        if merchant is None:
            return merchants
        return {merchant: merchants[merchant]} if merchant in merchants else {}

    def _apply(
        self, read: Callable[[Mapping[str, Merchant]], Callback], merchants: Mapping[str, Merchant], arrival: Arrival
    ) -> NotificationOutcome:
        if self._unknown(arrival):
            self.payments.merchants.catch_up()
        try:
            callback = read(self._named(merchants, arrival.mchid))
            # the readers translate only the types in TRANSLATIONS, each of which has a use case here
            return self.route(callback.merchant.mchid).dispatch[callback.event_type](callback)
        except (SignatureError, CallbackRejected, CallbackRefused) as exc:
            self.refused(arrival, str(exc))
            raise

    def refused(self, arrival: Arrival, reason: str) -> None:
        """Keep a refused callback for audit (rule 3: refused and recorded, never swallowed), bounded.

        Every refusal is counted per source; the first ``limit_per_minute`` of a
        source's minute are kept as events (headers, the body's first 4 KB and its
        hash).  Past that the source is throttled: counted, answered 429, not kept.
        A refusal is attributed to the merchant its path names, if that is one of
        ours (else nobody's: the deployment operator's).
        """
        source = arrival.remote or "?"
        if self.refusals is not None:
            count = self.refusals.count(source, self.audit.ledger.clock())
            if count > self.refusals.limit_per_minute:
                if count == self.refusals.limit_per_minute + 1:
                    log.warning(
                        "refused callbacks from %s: more than %d this minute; counting, not keeping", source, count - 1
                    )
                raise RefusalsThrottled(source)
        if arrival.mchid is not None and arrival.mchid not in self.payments.merchants:
            arrival = replace(arrival, mchid=None)
        # kept in the partition of the merchant its path names; naming none, in this one (the first partition's)
        desk = self if arrival.mchid is None else self.route(arrival.mchid)
        desk.audit.record_refused_callback(arrival, reason)
        log.warning("refused a callback from %s: %s", source, reason)

    def payment_succeeded(self, callback: Callback) -> NotificationOutcome:
        """Money taken: the payment, the order and the kept notification in one save."""
        notice = callback.notice
        assert isinstance(notice, TransactionNotice)  # noqa: S101 — TRANSLATIONS gives this type for this event
        mchid = callback.merchant.mchid
        try:  # one load of the payment: the command checks that it is this merchant's
            outcome = self.payments.apply_transaction(notice, "notification", callback.notification, mchid)
        except PaymentNotFound:
            raise CallbackRefused(f"unknown out_trade_no {notice.out_trade_no} for merchant {mchid}") from None
        return NotificationOutcome(callback.event_type, notice.out_trade_no, bool(outcome and outcome.changed))

    def refund_settled(self, callback: Callback) -> NotificationOutcome:
        """A refund's final word: the refund, the order and the kept notification in one save."""
        notice = callback.notice
        assert isinstance(notice, RefundNotice)  # noqa: S101 — TRANSLATIONS gives this type for this event
        try:
            self.refunding.apply_refund(callback.merchant.mchid, notice, callback.notification)
        except RefundNotFound:
            raise CallbackRefused(f"unknown out_refund_no {notice.out_refund_no}") from None
        return NotificationOutcome(callback.event_type, notice.out_trade_no, True)
