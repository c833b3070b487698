"""Deterministic ids: the natural key decides the aggregate id.

Two processes that create "the same" order, payment, refund or index entry
compute the same uuid5, so the event store's primary key makes the second
insert fail instead of creating a twin.
"""

from __future__ import annotations

from functools import lru_cache
from uuid import UUID, uuid5

# A fixed namespace for this project (itself uuid5(NAMESPACE_URL, "zhangben")).
NAMESPACE = UUID("a3f1b0a2-54c6-5b52-9b5c-2a5e6ec1d6a1")


def as_uuid(value: UUID | str) -> UUID:
    """An id as the event store hands it back (the library types it ``UUID | str``)."""
    return value if isinstance(value, UUID) else UUID(value)


def order_id(mchid: str, merchant_order_no: str) -> UUID:
    return uuid5(NAMESPACE, f"order/{mchid}/{merchant_order_no}")


# An order's view names its payments and refunds by these ids each time it is computed (a projection's every
# batch, a rebuild's every page): remembered, not hashed again.
@lru_cache(maxsize=20_000)
def payment_id(out_trade_no: str) -> UUID:
    return uuid5(NAMESPACE, f"payment/{out_trade_no}")


@lru_cache(maxsize=20_000)
def refund_id(mchid: str, out_refund_no: str) -> UUID:
    return uuid5(NAMESPACE, f"refund/{mchid}/{out_refund_no}")


def transaction_index_id(transaction_id: str) -> UUID:
    return uuid5(NAMESPACE, f"transaction/{transaction_id}")


def out_trade_no_for(order: UUID, attempt: int) -> str:
    """The ``out_trade_no`` of an order's n-th payment attempt.

    Deterministic so that two racing "new attempt" commands collide; 28
    characters of ``[0-9a-z]``, inside WeChat's 6–32 ``[A-Za-z0-9_-|*]`` rule.
    """
    return f"zb{order.hex[:24]}{attempt:02d}"
