"""Payer links that cannot be computed: an HMAC-signed, expiring capability for one order.

The payer has no API key, and ``out_trade_no`` is derived from the merchant's
(often sequential) order number, so a link made of it alone could be guessed:
anyone could read the order, make the ledger query WeChat, or open new
attempts.  The cashier link carries ``t=<expiry>.<HMAC-SHA256(key, order, expiry)>``
minted when the order is created; every payer-side route checks it.  The key
is a file (``cashier_key_file``), the same for every worker, so links survive
restarts and work on any worker; rotating the file revokes every link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

_PURPOSE = b"zhangben cashier v1"


def _mac(key: bytes, subject: str, expires: int) -> str:
    digest = hmac.new(key, _PURPOSE + b"|" + subject.encode() + b"|" + str(expires).encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def mint(key: bytes, subject: str, expires: int) -> str:
    """A token for ``subject`` (an order's id) valid until ``expires`` (Unix seconds)."""
    return f"{expires}.{_mac(key, subject, expires)}"


def holds(key: bytes, token: str, subject: str, now: int) -> bool:
    """The token was minted with this key for this subject, and has not expired."""
    expires_text, _, mac = token.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12 or not mac:
        return False
    expires = int(expires_text)
    return now < expires and hmac.compare_digest(mac, _mac(key, subject, expires))
