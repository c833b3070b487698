"""The merchant-facing business event types (docs/webhooks.md): what the feed and the webhooks carry."""

from __future__ import annotations

TYPES = (
    "order.paid",
    "order.needs_review",
    "order.closed",
    "order.expired",
    "refund.succeeded",
    "refund.closed",
    "refund.abnormal",
    "payment.duplicate",
)
