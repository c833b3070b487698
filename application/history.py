"""An order's history for auditors: every stored event, readable, oldest first.

Built from the events themselves (never from a view), so it shows exactly
what the ledger recorded and when.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEvent

from adapters.wechatpay.beijing import BEIJING

_ENVELOPE = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})
_AGGREGATE_ORDER = {"Order": 0, "Payment": 1, "Refund": 2, "TransactionIndex": 3}


@dataclass(frozen=True)
class HistoryEvent:
    aggregate: str
    id: UUID
    type: str
    version: int
    timestamp: datetime
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "aggregate": self.aggregate,
            "id": str(self.id),
            "type": self.type,
            "version": self.version,
            "timestamp": self.timestamp.astimezone(BEIJING).isoformat(),
            "data": self.data,
        }


def to_json_value(value: Any) -> Any:
    """Event values as JSON: datetimes in ISO 8601 in Beijing time (with +08:00), UUIDs as text."""
    if isinstance(value, datetime):
        return value.astimezone(BEIJING).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    return value


def describe(event: DomainEvent) -> HistoryEvent:
    topic = getattr(type(event), "TOPIC", type(event).__qualname__)
    aggregate = topic.split(".")[-2]
    data = {k: to_json_value(v) for k, v in vars(event).items() if k not in _ENVELOPE}
    return HistoryEvent(
        aggregate=aggregate,
        id=event.originator_id,
        type=type(event).__name__,
        version=event.originator_version,
        timestamp=event.timestamp,
        data=data,
    )


def history_events(streams: Iterable[Sequence[DomainEvent]], as_of: datetime | None = None) -> list[HistoryEvent]:
    described = [describe(event) for stream in streams for event in stream if as_of is None or event.timestamp <= as_of]
    described.sort(key=lambda e: (e.timestamp, _AGGREGATE_ORDER.get(e.aggregate, 9), e.version))
    return described


def version_at(events: Iterable[DomainEvent], as_of: datetime) -> int | None:
    """The aggregate's version at ``as_of``, or None if it did not exist yet."""
    version = None
    for event in events:
        if event.timestamp > as_of:
            break
        version = event.originator_version
    return version
