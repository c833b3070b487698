"""A verified WeChat notification, kept whole (raw headers, raw body, decrypted resource), once per id.

Payments and refunds both keep theirs; this is the one definition of how.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from eventsourcing.domain import Aggregate


class NotificationKept(Aggregate.Event):
    """Base of ``Payment.Notified`` and ``Refund.Notified`` (each pins its own topic)."""

    notification_id: str
    event_type: str
    headers: dict[str, str]
    body: str
    resource: dict[str, Any]
    received_at: datetime

    def apply(self, aggregate: Any) -> None:
        aggregate.notification_ids.append(self.notification_id)


class KeepsNotifications(Protocol):
    notification_ids: list[str]

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None: ...


def keep_notification(
    aggregate: KeepsNotifications, event_class: type[NotificationKept], notification_id: str, event_type: str,
    headers: dict[str, str], body: str, resource: dict[str, Any], received_at: datetime,
) -> bool:
    """Trigger ``event_class`` unless this notification id was kept already; say whether it was new."""
    if notification_id in aggregate.notification_ids:
        return False
    aggregate.trigger_event(event_class, notification_id=notification_id, event_type=event_type,
                            headers=dict(headers), body=body, resource=dict(resource), received_at=received_at)
    return True
