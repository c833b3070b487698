"""Status values, as the contract names them.

They are ``StrEnum``s for the code; events store plain strings (the
transcoder would silently turn a ``StrEnum`` into ``str`` anyway).
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    CREATED = "CREATED"
    PAYING = "PAYING"
    PAID = "PAID"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"
    CLOSED = "CLOSED"
    EXPIRED = "EXPIRED"
    NEEDS_REVIEW = "NEEDS_REVIEW"


class PaymentStatus(StrEnum):
    CREATED = "CREATED"
    PREPAID = "PREPAID"
    PAID = "PAID"
    FAILED = "FAILED"
    CLOSED = "CLOSED"
    EXPIRED = "EXPIRED"


class RefundStatus(StrEnum):
    REQUESTED = "REQUESTED"
    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    CLOSED = "CLOSED"
    ABNORMAL = "ABNORMAL"


class Channel(StrEnum):
    NATIVE = "native"
    JSAPI = "jsapi"
    MINIPROGRAM = "miniprogram"
    APP = "app"
    H5 = "h5"


# Channels where WeChat needs the payer's openid at prepay time.
CHANNELS_NEEDING_OPENID = frozenset({Channel.JSAPI, Channel.MINIPROGRAM})
