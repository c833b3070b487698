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


# Sets compared against stored views too, where statuses are plain strings: each name equals its value, so a
# member and its string hash and compare alike.
OPEN_PAYMENT = frozenset({PaymentStatus.CREATED, PaymentStatus.PREPAID})  # WeChat may still take money for it
OPEN_ORDER = frozenset({OrderStatus.CREATED, OrderStatus.PAYING})  # unpaid and not ended: it may still be paid
FOLLOWED_REFUND = frozenset({RefundStatus.PROCESSING, RefundStatus.ABNORMAL})  # not final: asked about again
FINAL_ORDER = frozenset(  # nothing more will happen without a person or a refund: a live stream can end
    {
        OrderStatus.PAID,
        OrderStatus.PARTIALLY_REFUNDED,
        OrderStatus.REFUNDED,
        OrderStatus.CLOSED,
        OrderStatus.EXPIRED,
        OrderStatus.NEEDS_REVIEW,
    }
)

# Channels where WeChat needs the payer's openid at prepay time.
CHANNELS_NEEDING_OPENID = frozenset({Channel.JSAPI, Channel.MINIPROGRAM})


# What a person reads for each order status (the console, the finance exports).
ORDER_STATUS_NAMES = {
    OrderStatus.CREATED: "待支付",
    OrderStatus.PAYING: "支付中",
    OrderStatus.PAID: "已支付",
    OrderStatus.PARTIALLY_REFUNDED: "部分退款",
    OrderStatus.REFUNDED: "已全额退款",
    OrderStatus.CLOSED: "已关闭",
    OrderStatus.EXPIRED: "已过期",
    OrderStatus.NEEDS_REVIEW: "待人工处理",
}
