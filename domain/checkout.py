"""What a shop's checkout says about an order beyond its amount: who buys, what, and where the payer goes next.

Seed 000's order table (``user_id``, ``items``, ``currency``, ``meta``, ``returnUrl``) is kept with the order,
in its ``Created`` event, so the auditor's history and the shop's views show what was sold.  The rules that make
it trustworthy are here, written once: the items add up to the amount to the fen, the currency is the only one
WeChat Pay settles for a Chinese merchant (``CNY``: https://pay.weixin.qq.com/doc/v3/merchant/4012791856, the
``amount.currency`` field), ``meta`` is a small JSON object, and a return URL is https on a host the merchant
allowed (an open redirect on a payment page is a phishing tool).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from domain.errors import InvalidInput
from domain.money import MAX_FEN

CURRENCY = "CNY"
USER_ID_MAX_CHARS = 64
ITEMS_MAX = 100
ITEM_NAME_MAX_CHARS = 128
ITEM_QUANTITY_MAX = 100_000
META_MAX_BYTES = 2048
RETURN_URL_MAX_CHARS = 1024


@dataclass(frozen=True)
class LineItem:
    """One line of the order: what, how many, at how many fen each."""

    name: str
    quantity: int
    unit_price_fen: int

    @property
    def total_fen(self) -> int:
        return self.quantity * self.unit_price_fen

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "quantity": self.quantity, "unit_price_fen": self.unit_price_fen}


def line_items(raw: Iterable[Mapping[str, Any]] | None) -> tuple[LineItem, ...]:
    """Line items from their dicts (an event's, an API body's), each checked."""
    items = tuple(
        LineItem(str(item.get("name", "")), item.get("quantity", 0), item.get("unit_price_fen", 0))
        for item in (raw or ())
    )
    return require_items(items, None)


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def require_items(items: Sequence[LineItem], amount_fen: int | None) -> tuple[LineItem, ...]:
    """Items within limits whose sum is ``amount_fen`` (when given): a basket that does not add up is refused."""
    if len(items) > ITEMS_MAX:
        raise InvalidInput("items", f"an order has at most {ITEMS_MAX} items")
    for n, item in enumerate(items):
        if not item.name.strip() or len(item.name) > ITEM_NAME_MAX_CHARS:
            raise InvalidInput(f"items[{n}].name", f"an item's name is 1-{ITEM_NAME_MAX_CHARS} characters")
        if not _whole(item.quantity, 1, ITEM_QUANTITY_MAX):
            raise InvalidInput(f"items[{n}].quantity", f"quantity is an integer from 1 to {ITEM_QUANTITY_MAX}")
        if not _whole(item.unit_price_fen, 0, MAX_FEN):
            raise InvalidInput(f"items[{n}].unit_price_fen", "unit_price_fen is an integer number of fen (≥ 0)")
    total = sum(item.total_fen for item in items)
    if items and amount_fen is not None and total != amount_fen:
        raise InvalidInput(
            "items", f"the items add up to {total} fen, and amount_fen is {amount_fen}: they must be equal"
        )
    return tuple(items)


def require_currency(value: object) -> str:
    if value != CURRENCY:
        raise InvalidInput("currency", f"currency must be {CURRENCY}: WeChat Pay settles a Chinese merchant in CNY")
    return CURRENCY


def require_user_id(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= USER_ID_MAX_CHARS):
        raise InvalidInput("user_id", f"user_id is 1-{USER_ID_MAX_CHARS} characters")
    return value


def meta_text(value: Mapping[str, Any] | None) -> str | None:
    """``meta`` as the order keeps it: compact JSON with sorted keys (so the same object is the same order)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput("meta", "meta must be a JSON object")
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidInput("meta", "meta must be plain JSON (no NaN or Infinity)") from None
    if len(text.encode()) > META_MAX_BYTES:
        raise InvalidInput("meta", f"meta is larger than {META_MAX_BYTES} bytes as JSON")
    return text


def meta_object(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text is not None else None


def return_host(url: str) -> str:
    """The host of an https return URL, or ``InvalidInput``."""
    if len(url) > RETURN_URL_MAX_CHARS:
        raise InvalidInput("return_url", f"return_url is longer than {RETURN_URL_MAX_CHARS} characters")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        raise InvalidInput("return_url", "return_url is not a URL") from None
    if parts.scheme != "https" or not host or parts.username or parts.password:
        raise InvalidInput("return_url", "return_url must be an https URL with a host (no user:password)")
    return host


def require_return_url(url: str | None, allowed_hosts: Iterable[str]) -> str | None:
    """An https URL whose host is one the merchant allowed (``return_url_hosts``); else ``InvalidInput``."""
    if url is None:
        return None
    host = return_host(url)
    allowed = {h.lower() for h in allowed_hosts}
    if host not in allowed:
        listed = ", ".join(sorted(allowed)) or "none"
        raise InvalidInput(
            "return_url", f"return_url's host {host} is not one of the merchant's return_url_hosts ({listed})"
        )
    return url
