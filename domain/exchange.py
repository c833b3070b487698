"""What the ledger asked WeChat Pay and what WeChat answered, kept on the aggregate the call was for.

The other half of the evidence an auditor asks for (the notifications are the
first): every prepay, query and close of a payment, every refund and refund
query, every bill download, with its answer — method, URL, status, the answer's
body and WeChat's signature headers, bounded and with our own signatures left
out (the WeChat adapter builds the record, ``adapters/wechatpay/evidence.py``).
``WechatCalled`` (the base of ``Payment.WechatCalled``, ``Refund.WechatCalled``
and ``DailyBill.WechatCalled``) stores one; it changes no state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from eventsourcing.domain import Aggregate


class WechatCalled(Aggregate.Event):
    """One request to WeChat Pay and its answer (``exchange``: endpoint, method, url, request_body, status,
    response_headers, response_body, error, at, duration_ms)."""

    exchange: dict[str, Any]

    def apply(self, aggregate: Any) -> None:
        pass  # evidence only: what the aggregate is does not change


class KeepsExchanges(Protocol):
    def trigger_event(self, event_class: type[Aggregate.Event], **kwargs: Any) -> None: ...


def keep_exchanges(
    aggregate: KeepsExchanges, event_class: type[WechatCalled], exchanges: Iterable[Mapping[str, Any]]
) -> int:
    """One ``event_class`` per exchange, in the order they were made; how many."""
    count = 0
    for exchange in exchanges:
        aggregate.trigger_event(event_class, exchange=dict(exchange))
        count += 1
    return count
