"""A verified WeChat notification, kept whole (raw headers, raw body, decrypted resource), once per id.

``Notification`` is the one record of a kept notification: the WeChat
adapter builds it after verifying and decrypting, the application hands it
to the aggregate, and ``Notified`` (the base of ``Payment.Notified`` and
``Refund.Notified``) stores its fields.  Keeping raw callbacks for audit is
rule 5 of the project; the id is WeChat's notification id, so a redelivery
stores nothing (docs/wechatpay-protocol.md §3.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from eventsourcing.domain import Aggregate


@dataclass(frozen=True)
class Notification:
    """What WeChat sent, as it arrived: its id and type, the raw headers and body, the decrypted resource."""

    id: str
    event_type: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    resource: dict[str, Any] = field(default_factory=dict)


class Notified(Aggregate.Event):
    """Base of ``Payment.Notified`` and ``Refund.Notified`` (each pins its own topic)."""

    notification_id: str
    event_type: str
    headers: dict[str, str]
    body: str
    resource: dict[str, Any]
    received_at: datetime

    def apply(self, aggregate: KeepsNotifications) -> None:
        aggregate.notification_ids.append(self.notification_id)


class KeepsNotifications(Protocol):
    notification_ids: list[str]

    def trigger_event(self, event_class: type[Aggregate.Event], **kwargs: Any) -> None: ...


def keep_notification(
    aggregate: KeepsNotifications,
    event_class: type[Notified],
    notification: Notification,
    received_at: datetime,
) -> bool:
    """Trigger ``event_class`` unless this notification id was kept already; say whether it was new."""
    if notification.id in aggregate.notification_ids:
        return False
    aggregate.trigger_event(
        event_class,
        notification_id=notification.id,
        event_type=notification.event_type,
        headers=dict(notification.headers),
        body=notification.body,
        resource=dict(notification.resource),
        received_at=received_at,
    )
    return True
