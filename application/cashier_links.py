"""The payer's cashier link (``cashier_url``): minted when a Native order is created, checked on every payer action.

A link is ``/pay/{out_trade_no}?t=<capability>``; the capability is signed for
the order (adapters/capabilities.py), so it opens every attempt of that order
(a refreshed QR code keeps the same ``t``) and nothing else.  It lasts
``LIFETIME`` from the order's creation: long enough to come back and see it
paid, not forever.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from adapters import capabilities
from adapters.return_signature import ReturnSigner
from domain.order import Order
from domain.payment import Payment

LIFETIME = timedelta(days=7)


# The statuses in which the payer is sent back to the shop: the money was taken and the order is settled
RETURNING = frozenset({"PAID", "PARTIALLY_REFUNDED", "REFUNDED"})


class CashierLinks:
    def __init__(self, key: bytes | None, clock: Callable[[], datetime]) -> None:
        self._key = key
        self.clock = clock
        self.signer = ReturnSigner(key) if key is not None else None

    def return_to(self, view: Mapping[str, Any]) -> str | None:
        """The order's ``return_url`` with its number, status, paid amount, the time and the signature added
        (``adapters.return_signature``); None before it is paid or without a return URL."""
        url = view.get("return_url")
        if not url or self.signer is None or view["status"] not in RETURNING:
            return None
        params = {
            "mchid": view["mchid"],
            "merchant_order_no": view["merchant_order_no"],
            "status": view["status"],
            "paid_fen": str(view["paid_fen"]),
            "ts": str(int(self.clock().timestamp())),
        }
        params |= {"kid": self.signer.key_id, "sig": self.signer.sign(params)}
        parts = urlsplit(str(url))
        kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
        return urlunsplit(parts._replace(query=urlencode(kept + list(params.items()))))

    @property
    def enabled(self) -> bool:
        """Payer pages need ``cashier_key_file``; without it they are off (every payer route is a 404)."""
        return self._key is not None

    def url(self, base_url: str, order: Order, payment: Payment) -> str | None:
        """The payer's link for this attempt, or None when payer pages are off or the attempt has no QR code."""
        if self._key is None or not payment.code_url:
            return None
        expires = int((order.created_at + LIFETIME).timestamp())
        token = capabilities.mint(self._key, str(order.id), expires)
        return f"{base_url.rstrip('/')}/pay/{quote(payment.out_trade_no)}?t={token}"

    def opens(self, token: str, payment: Payment) -> bool:
        """``token`` opens this payment's order (and so this attempt), now."""
        if self._key is None or not token:
            return False
        return capabilities.holds(self._key, token, str(payment.order_id), int(self.clock().timestamp()))
