"""Every limit on what a merchant may send, written once.

The HTTP models (``api/``) take their lengths, ranges and patterns from
here and the ledger's commands check the same values, so the API's schema
and the ledger can never disagree.  WeChat's own limits: ``description`` is
at most 127 bytes and ``attach`` 128, ``out_trade_no``/``out_refund_no`` are
at most 32/64 characters of letters, digits and ``_-|*@``, ``time_expire``
is what the merchant allows (docs/wechatpay-protocol.md §4.2, §4.5).
"""

from __future__ import annotations

import re

from domain.errors import InvalidInput
from domain.status import CHANNELS_NEEDING_OPENID, Channel

DESCRIPTION_MAX_BYTES = 127
ATTACH_MAX_BYTES = 128
REFUND_REASON_MAX_CHARS = 80
OPENID_MAX_CHARS = 128
EXPIRE_SECONDS_MIN, EXPIRE_SECONDS_MAX, EXPIRE_SECONDS_DEFAULT = 60, 7200, 600  # 10 minutes: seed 000
KEY_MIN_CHARS, KEY_MAX_CHARS = 1, 64  # merchant_order_no, out_refund_no
KEY_CHARS = "letters, digits and _-|*@"
KEY_PATTERN = r"^[A-Za-z0-9_\-|*@]+$"
IDEMPOTENCY_KEY_MAX_CHARS = 128
PRODUCT_ID_MAX_CHARS = 32  # Native mode 1's product_id (https://pay.weixin.qq.com/wiki/doc/api/native.php?chapter=9_1)
PRODUCT_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
MAX_ATTEMPTS_PER_ORDER = 99  # the out_trade_no has two digits for it

TRANSACTION_ID_PATTERN = r"^[A-Za-z0-9]{1,64}$"  # WeChat's 28 digits; the pattern is loose, the lookup exact
_KEY = re.compile(KEY_PATTERN)
_TRANSACTION_ID = re.compile(TRANSACTION_ID_PATTERN)
_PRODUCT_ID = re.compile(PRODUCT_ID_PATTERN)


def require_key(value: object, field: str) -> str:
    """Keys travel in URLs and to WeChat: WeChat's charset, sane lengths."""
    if not isinstance(value, str) or not (KEY_MIN_CHARS <= len(value) <= KEY_MAX_CHARS) or not _KEY.match(value):
        raise InvalidInput(field, f"{field} must be {KEY_MIN_CHARS}-{KEY_MAX_CHARS} characters of {KEY_CHARS}")
    return value


def require_product_id(value: object) -> str:
    """Printed in a QR code and sent to WeChat: short, plain characters."""
    if not isinstance(value, str) or not (1 <= len(value) <= PRODUCT_ID_MAX_CHARS) or not _PRODUCT_ID.match(value):
        raise InvalidInput("product_id", f"product_id must be 1-{PRODUCT_ID_MAX_CHARS} letters, digits, _ or -")
    return value


def require_channel(channel: str, payer_openid: str | None) -> None:
    if channel not in set(Channel):
        raise InvalidInput("channel", f"channel must be one of {', '.join(c.value for c in Channel)}")
    if channel in CHANNELS_NEEDING_OPENID and not payer_openid:
        raise InvalidInput("payer_openid", f"payer_openid is required for the {channel} channel")


def require_expire_seconds(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (EXPIRE_SECONDS_MIN <= value <= EXPIRE_SECONDS_MAX):
        raise InvalidInput(
            "expire_seconds", f"expire_seconds must be an integer from {EXPIRE_SECONDS_MIN} to {EXPIRE_SECONDS_MAX}"
        )
    return value


def require_description(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("description", "description must be a non-empty string")
    if len(value.encode()) > DESCRIPTION_MAX_BYTES:
        raise InvalidInput("description", f"description is longer than WeChat's {DESCRIPTION_MAX_BYTES} bytes")
    return value


def require_attach(value: str | None) -> str | None:
    if value is not None and len(value.encode()) > ATTACH_MAX_BYTES:
        raise InvalidInput("attach", f"attach is longer than WeChat's {ATTACH_MAX_BYTES} bytes")
    return value


def require_transaction_id(value: object) -> str:
    if not isinstance(value, str) or not _TRANSACTION_ID.match(value):
        raise InvalidInput("transaction_id", "transaction_id is WeChat's number: 1-64 letters and digits")
    return value
