"""What a merchant asks of the ledger, each request one frozen value: built once where it arrives (the HTTP
API's body, the CLI, a printed code's scan) and passed whole to the use cases, never unpacked into a long
argument list on the way.  Its limits are ``domain.limits``'s, checked by the use case that takes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from domain.checkout import CURRENCY, LineItem, require_currency, require_items, require_user_id, return_host
from domain.limits import (
    EXPIRE_SECONDS_DEFAULT,
    require_attach,
    require_channel,
    require_description,
    require_expire_seconds,
)
from domain.money import require_fen

LOOPBACK = "127.0.0.1"  # a payer's IP where none is known (WeChat needs one for H5 only)


@dataclass(frozen=True)
class OrderTerms:
    """What an order is created with; the same terms again are the same order (the idempotency check)."""

    amount_fen: int
    description: str
    channel: str
    payer_openid: str | None = None
    expire_seconds: int = EXPIRE_SECONDS_DEFAULT
    attach: str | None = None
    # the shop's checkout (domain/checkout.py): who buys, what, where the payer goes after paying, and its own data
    user_id: str | None = None
    items: tuple[LineItem, ...] = ()
    return_url: str | None = None
    currency: str = CURRENCY
    meta: str | None = None  # a JSON object's text, compact with sorted keys (``checkout.meta_text``)

    def checked(self) -> OrderTerms:
        """These terms, if every one is within WeChat's and the ledger's limits; else ``InvalidInput``.

        The return URL's form is checked here; whether its host is the merchant's is the use case's to check."""
        require_fen(self.amount_fen, "amount_fen")
        require_description(self.description)
        require_channel(self.channel, self.payer_openid)
        require_expire_seconds(self.expire_seconds)
        require_attach(self.attach)
        require_currency(self.currency)
        require_user_id(self.user_id)
        require_items(self.items, self.amount_fen)
        if self.return_url is not None:
            return_host(self.return_url)
        return self

    def as_dict(self) -> dict[str, Any]:
        """The terms by name, as the order's ``Created`` event carries them (items as plain dicts)."""
        fields = asdict(self)
        fields["items"] = [item.as_dict() for item in self.items]
        return fields

    def digest_fields(self) -> dict[str, Any]:
        """The terms an ``Idempotency-Key`` digest covers: the checkout's only when given, so a key saved before
        the checkout fields existed still matches its own request sent again."""
        fields = self.as_dict()
        for name, default in CHECKOUT_DEFAULTS.items():
            if fields[name] == default:
                del fields[name]
        return fields


CHECKOUT_DEFAULTS: dict[str, Any] = {
    "user_id": None,
    "items": [],
    "return_url": None,
    "currency": CURRENCY,
    "meta": None,
}


@dataclass(frozen=True)
class NewOrder:
    """A request for an order, whole: who asks, the merchant's number, the terms, and how to prepay it.

    ``appid`` names the app that pays (None: the one that claims the channel);
    ``client_ip`` (H5's ``payer_client_ip``) and ``product_id`` (Native mode 1)
    go to WeChat with the prepay; ``idempotency_key`` is the request's own name.
    """

    mchid: str
    merchant_order_no: str
    terms: OrderTerms
    idempotency_key: str | None = None
    appid: str | None = None
    client_ip: str = LOOPBACK
    product_id: str | None = None
    qr_seconds: int | None = None  # how long each QR code (attempt) lives within the order's lifetime; None: all of it


@dataclass(frozen=True)
class NewAttempt:
    """A request for a fresh payment attempt of an unpaid order: a new ``out_trade_no``, perhaps on another
    channel or app (the open ones are closed at WeChat first)."""

    mchid: str
    merchant_order_no: str
    channel: str | None = None
    payer_openid: str | None = None
    appid: str | None = None
    client_ip: str = LOOPBACK


@dataclass(frozen=True)
class NewRefund:
    """A request to give money back: from the payment that paid the order, or from ``out_trade_no`` (a
    duplicate payment); ``out_refund_no`` is its idempotency key."""

    mchid: str
    merchant_order_no: str
    out_refund_no: str
    amount_fen: int
    reason: str = ""
    out_trade_no: str | None = None
