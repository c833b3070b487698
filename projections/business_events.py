"""Merchant-facing business events, from the ledger's log: what the event feed and the webhooks carry.

One ledger event becomes at most two business events, each with a stable
sequence number derived from its position in the log (``position * 4 +
n``), so ids and the feed's cursor are the same after a rebuild or a
restart.  Each carries the order view as it stood at that event, rebuilt
from the events alone (``view_at``, handed over by bootstrap), so a replay
writes byte-for-byte the same rows.

| ledger event | business event |
|---|---|
| ``Order.Paid`` | ``order.paid``, when that payment settles the order by itself (``domain.order.paid_announcements``) |
| ``Order.ReviewResolved`` | ``order.paid``, when a person's resolution keeps the money of an order not yet announced |
| ``Order.NeedsReview`` | ``order.needs_review`` (and ``payment.duplicate`` when money was taken twice) |
| ``Order.Closed`` / ``Order.Expired`` | ``order.closed`` / ``order.expired`` |
| ``Order.Refunded`` | ``refund.succeeded`` |
| ``Order.RefundReleased`` | ``refund.closed`` |
| ``Refund.Abnormal`` | ``refund.abnormal`` |
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import Notification

from adapters.recorders import Streams
from adapters.viewdb import ViewDatabase, sortable
from adapters.wechatpay.beijing import BEIJING
from domain import ids
from domain.order import Order, paid_announcements
from domain.refund import Refund
from projections.core import EventLog

# The order views as of (order, moment) pairs, from the events alone (``Ledger.views_at_many``, from bootstrap)
ViewsAt = Callable[[list[tuple[UUID, datetime]], Streams], Sequence[Mapping[str, Any] | None]]

NAME = "business_events"
PER_POSITION = 4  # business events one ledger event may give
DDL = [
    "CREATE TABLE IF NOT EXISTS business_events (seq BIGINT PRIMARY KEY, mchid TEXT NOT NULL, type TEXT NOT NULL, "
    "order_id TEXT NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS business_events_by_merchant ON business_events (mchid, seq)",
    "CREATE INDEX IF NOT EXISTS business_events_by_type ON business_events (type)",  # the review counter's
]
INSERT = (
    "INSERT INTO business_events (seq, mchid, type, order_id, created_at, body) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (seq) DO NOTHING"
)
_ORDER_EVENTS = {
    Order.Paid.TOPIC: "order.paid",
    Order.ReviewResolved.TOPIC: "order.paid",
    Order.NeedsReview.TOPIC: "order.needs_review",
    Order.Closed.TOPIC: "order.closed",
    Order.Expired.TOPIC: "order.expired",
    Order.Refunded.TOPIC: "refund.succeeded",
    Order.RefundReleased.TOPIC: "refund.closed",
}
ORDER_TOPICS = Order.TOPIC + "."
_PAID_TOPICS = frozenset({Order.Paid.TOPIC, Order.ReviewResolved.TOPIC})
_DUPLICATE_REASON = "duplicate_payment"


def event_id(seq: int, partition: int = 0) -> str:
    """A business event's id: its partition's feed position, naming the partition (docs/scale-out.md).

    Partition 0's ids are the ones a deployment of one partition has always
    handed out (``evt_`` and 16 digits), so they stay valid; another
    partition's carry its number (``evt_p003_`` …), so no two merchants'
    events share an id whatever partitions they are on.
    """
    return f"evt_{seq:016d}" if partition == 0 else f"evt_p{partition:03d}_{seq:016d}"


def seq_of(event_id_text: str, partition: int = 0) -> int | None:
    """The feed position an id names in ``partition``; None for an id that is not one of that partition's."""
    prefix = "evt_" if partition == 0 else f"evt_p{partition:03d}_"
    rest = event_id_text[len(prefix) :] if event_id_text.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


@dataclass(frozen=True)
class BusinessEvent:
    seq: int
    mchid: str
    type: str
    order_id: str
    created_at: str
    body: dict[str, Any]
    partition: int = 0

    @property
    def id(self) -> str:
        return event_id(self.seq, self.partition)


class BusinessEvents:
    name = NAME
    tables = ("business_events",)

    def __init__(self, log: EventLog, db: ViewDatabase, views_at: ViewsAt, partition: int = 0) -> None:
        self.log = log
        self.db = db
        self.partition = partition  # named in every event id
        self.views_at = views_at

    def create_tables(self) -> bool:
        for statement in DDL:
            self.db.execute(statement)
        return False

    def prepare(self, notifications: Sequence[Notification]) -> list[tuple[Any, ...]]:
        """The batch's business events, each with its order's view as of that event (all read in a few queries)."""
        chosen = [
            (n, self.log.event(n))
            for n in notifications
            if n.topic in _ORDER_EVENTS or n.topic == Refund.Abnormal.TOPIC
        ]
        refunds = [ids.as_uuid(n.originator_id) for n, _ in chosen if not n.topic.startswith(ORDER_TOPICS)]
        order_of = {i: a.order_id for i, a in self.log.aggregates(refunds, notifications).items()} if refunds else {}
        order_ids = [
            ids.as_uuid(n.originator_id) if n.topic.startswith(ORDER_TOPICS) else order_of[ids.as_uuid(n.originator_id)]
            for n, _ in chosen
        ]
        streams = self.log.streams_for(notifications)
        views = self.views_at(
            [(order_id, event.timestamp) for order_id, (_, event) in zip(order_ids, chosen, strict=True)], streams
        )
        paid_ids = {order_id for (n, _), order_id in zip(chosen, order_ids, strict=True) if n.topic in _PAID_TOPICS}
        announced = {i: paid_announcements(events) for i, events in streams(paid_ids).items()} if paid_ids else {}
        rows: list[tuple[Any, ...]] = []
        for (n, event), order_id, view in zip(chosen, order_ids, views, strict=True):
            if view is None:
                continue
            if n.topic in _PAID_TOPICS and event.originator_version not in announced.get(order_id, ()):
                continue  # held back for a person's review, or already announced
            data = {k: _plain(v) for k, v in vars(event).items() if k not in _ENVELOPE}
            for index, kind in enumerate(_kinds(n.topic, event)):
                seq = n.id * PER_POSITION + index
                body = {
                    "id": event_id(seq, self.partition),
                    "type": kind,
                    "created_at": event.timestamp.astimezone(BEIJING).isoformat(),
                    "mchid": view["mchid"],
                    "merchant_order_no": view["merchant_order_no"],
                    "data": {"detail": data, "order": dict(view)},
                }
                rows.append(
                    (
                        seq,
                        view["mchid"],
                        kind,
                        str(order_id),
                        sortable(event.timestamp),
                        json.dumps(body, ensure_ascii=False, sort_keys=True),
                    )
                )
        return rows

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.db.executemany(INSERT, rows)

    # -- queries -------------------------------------------------------------------------------

    def page(
        self, mchid: str, after: int, limit: int, types: Sequence[str] = (), until: int | None = None
    ) -> list[BusinessEvent]:
        """The merchant's events after ``after`` (up to ``until``), oldest first."""
        where, params = ["mchid = ?", "seq > ?"], [mchid, after]
        if until is not None:
            where.append("seq <= ?")
            params.append(until)
        if types:
            where.append(f"type IN ({', '.join('?' for _ in types)})")
            params += list(types)
        rows = self.db.execute(
            f"SELECT seq, mchid, type, order_id, created_at, body FROM business_events WHERE {' AND '.join(where)} "  # noqa: S608 — fixed fragments
            "ORDER BY seq LIMIT ?",
            (*params, limit),
        )
        return [_event(r, self.partition) for r in rows]

    def counts(self, types: Sequence[str]) -> dict[str, int]:
        """How many events of each type there are, all merchants (durable totals for ``/metrics``)."""
        rows = self.db.execute(
            f"SELECT type, COUNT(*) FROM business_events WHERE type IN ({', '.join('?' for _ in types)}) GROUP BY type",  # noqa: S608 — placeholders
            tuple(types),
        )
        return {str(kind): int(count) for kind, count in rows}

    def last_seq(self, mchid: str) -> int:
        rows = self.db.execute("SELECT MAX(seq) FROM business_events WHERE mchid = ?", (mchid,))
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def by_seq(self, seq: int) -> BusinessEvent | None:
        rows = self.db.execute(
            "SELECT seq, mchid, type, order_id, created_at, body FROM business_events WHERE seq = ?", (seq,)
        )
        return _event(rows[0], self.partition) if rows else None

    def get(self, mchid: str, seq: int) -> BusinessEvent | None:
        rows = self.db.execute(
            "SELECT seq, mchid, type, order_id, created_at, body FROM business_events WHERE seq = ? AND mchid = ?",
            (seq, mchid),
        )
        return _event(rows[0], self.partition) if rows else None


_ENVELOPE = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


def _kinds(topic: str, event: DomainEvent) -> list[str]:
    if topic == Refund.Abnormal.TOPIC:
        return ["refund.abnormal"]
    kind = _ORDER_EVENTS[topic]
    if kind == "order.needs_review" and getattr(event, "reason", "") == _DUPLICATE_REASON:
        return [kind, "payment.duplicate"]
    return [kind]


def _event(row: tuple[Any, ...], partition: int) -> BusinessEvent:
    return BusinessEvent(int(row[0]), row[1], row[2], row[3], row[4], json.loads(row[5]), partition)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(BEIJING).isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value
