"""Domain errors: one root, grouped by what the caller should do about them.

The HTTP and CLI edges map these once (422 / 404 / 409 / 503 and one-line
messages); nothing below the edge formats an error for a user.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error the ledger raises on purpose."""


class InvalidInput(LedgerError):
    """The caller sent something that can never be valid (a 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidAmount(InvalidInput):
    """An amount that is not a positive integer number of fen."""


class Forbidden(LedgerError):
    """The caller may not do this now (a 403): a deactivated sub-merchant's new order, say."""


class NotFound(LedgerError):
    """The thing asked for does not exist (or belongs to someone else)."""


class OrderNotFound(NotFound):
    def __init__(self, mchid: str, merchant_order_no: str) -> None:
        super().__init__(f"order {merchant_order_no!r} not found for merchant {mchid}")
        self.merchant_order_no = merchant_order_no


class PaymentNotFound(NotFound):
    def __init__(self, out_trade_no: str) -> None:
        super().__init__(f"payment attempt {out_trade_no!r} not found")
        self.out_trade_no = out_trade_no


class RefundNotFound(NotFound):
    def __init__(self, out_refund_no: str) -> None:
        super().__init__(f"refund {out_refund_no!r} not found")
        self.out_refund_no = out_refund_no


class ProductNotFound(NotFound):
    def __init__(self, mchid: str, product_id: str) -> None:
        super().__init__(f"product {product_id!r} not found for merchant {mchid}")
        self.product_id = product_id


class Conflict(LedgerError):
    """The request is well formed but contradicts what the ledger holds (a 409)."""


class OrderConflict(Conflict):
    """The same merchant order number was sent again with a different body."""


class InvalidTransition(Conflict):
    """A command that the aggregate's current status forbids."""

    def __init__(self, aggregate: str, key: str, command: str, status: str) -> None:
        super().__init__(f"{aggregate} {key!r} is {status}: cannot {command}")
        self.aggregate = aggregate
        self.key = key
        self.command = command
        self.status = status


class RefundExceedsPaid(Conflict):
    def __init__(self, requested_fen: int, refundable_fen: int) -> None:
        super().__init__(f"refund of {requested_fen} fen exceeds what is left to refund ({refundable_fen} fen)")
        self.requested_fen = requested_fen
        self.refundable_fen = refundable_fen


class RefundLimitReached(Conflict):
    def __init__(self, limit: int) -> None:
        super().__init__(f"an order can have at most {limit} refunds (WeChat Pay's rule)")


class RefundConflict(Conflict):
    """The same out_refund_no was requested again with different terms."""


class TransactionConflict(Conflict):
    """A WeChat transaction_id already recorded against another payment."""


class AttemptRaced(Conflict):
    """Another payment attempt was started for the order at the same moment: only one may be open."""

    def __init__(self, merchant_order_no: str) -> None:
        super().__init__(
            f"order {merchant_order_no!r}: another payment attempt was started at the same moment; "
            "use that one (GET the order) — only one attempt may be payable at a time"
        )


class ConcurrencyConflict(LedgerError):
    """Optimistic-concurrency retries were exhausted; the caller may retry later."""
