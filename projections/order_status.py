"""The order status view: one row per order, what the list endpoint filters and pages on."""

from __future__ import annotations

import base64
import builtins  # the class below has a method named `list`
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification

from adapters.recorders import Streams
from adapters.viewdb import ViewDatabase, sortable
from adapters.wechatpay.beijing import BEIJING
from domain import ids
from domain.order import Order
from domain.payment import Payment
from domain.refund import Refund
from domain.status import FOLLOWED_REFUND
from projections.core import EventLog

# The views of several orders, computed from their aggregates read in two queries (``Ledger.views_of_many``,
# handed over by bootstrap).
ViewsOf = Callable[[list[UUID], Streams], Mapping[UUID, Mapping[str, Any]]]

NAME = "order_status"
DDL = [
    "CREATE TABLE IF NOT EXISTS order_status (order_id TEXT PRIMARY KEY, mchid TEXT NOT NULL, "
    "merchant_order_no TEXT NOT NULL, status TEXT NOT NULL, amount_fen BIGINT NOT NULL, paid_fen BIGINT NOT NULL, "
    "refunded_fen BIGINT NOT NULL, created_at TEXT NOT NULL, version BIGINT NOT NULL, view TEXT NOT NULL, "
    "open_refunds BIGINT NOT NULL DEFAULT 0, paid_ms BIGINT)",
    "CREATE INDEX IF NOT EXISTS order_status_open_refunds ON order_status (open_refunds)",
    "CREATE INDEX IF NOT EXISTS order_status_by_created ON order_status (mchid, created_at, order_id)",
    "CREATE INDEX IF NOT EXISTS order_status_by_status ON order_status (mchid, status, created_at)",
]
UPSERT = (
    "INSERT INTO order_status (order_id, mchid, merchant_order_no, status, amount_fen, paid_fen, refunded_fen, "
    "created_at, version, view, open_refunds, paid_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, paid_fen = excluded.paid_fen, "
    "refunded_fen = excluded.refunded_fen, version = excluded.version, view = excluded.view, "
    "open_refunds = excluded.open_refunds, paid_ms = excluded.paid_ms"
)


class OrderStatusView:
    """Each batch names the orders it touched; each touched order's row is rewritten whole
    from its aggregates, all read in a few queries per batch, and written with one ``executemany``.
    Rewriting a row is idempotent, so replaying a batch changes nothing."""

    name = NAME
    tables = ("order_status",)

    def __init__(self, log: EventLog, db: ViewDatabase, views_of: ViewsOf) -> None:
        self.log = log
        self.db = db
        self.views_of = views_of
        self._order_of: dict[UUID, UUID] = {}  # payment or refund id → order id

    def create_tables(self) -> bool:
        for statement in DDL:
            self.db.execute(statement)
        return self.db.add_column("order_status", "paid_ms", "BIGINT")  # a view from before it: replayed to fill it

    def prepare(self, notifications: Sequence[Notification]) -> list[tuple[Any, ...]]:
        owned = [
            ids.as_uuid(n.originator_id)
            for n in notifications
            if n.topic.startswith((Payment.TOPIC + ".", Refund.TOPIC + "."))
        ]
        unknown = [i for i in owned if i not in self._order_of]
        if unknown:  # a payment's or refund's order, read once (it never changes)
            self._order_of |= {i: a.order_id for i, a in self.log.aggregates(unknown, notifications).items()}
        touched: dict[UUID, None] = {}
        for n in notifications:
            originator = ids.as_uuid(n.originator_id)
            if n.topic.startswith(Order.TOPIC + "."):
                touched[originator] = None
            elif originator in self._order_of:
                touched[self._order_of[originator]] = None
        views = self.views_of(list(touched), self.log.streams_for(notifications))
        return [self._row(views[order_id], order_id) for order_id in touched]

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.db.executemany(UPSERT, rows)

    @staticmethod
    def _row(view: Mapping[str, Any], order_id: UUID) -> tuple[Any, ...]:
        return (
            str(order_id),
            view["mchid"],
            view["merchant_order_no"],
            view["status"],
            view["amount_fen"],
            view["paid_fen"],
            view["refunded_fen"],
            sortable(datetime.fromisoformat(view["created_at"])),
            view["version"],
            json.dumps(view, ensure_ascii=False),
            sum(1 for r in view["refunds"] if r["status"] in FOLLOWED_REFUND),
            _paid_ms(view),
        )

    # -- queries ---------------------------------------------------------------------------

    def list(
        self,
        mchid: str,
        status: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str | None]:
        """Newest first; the cursor is the last row's (created_at, order_id)."""
        where, params = ["mchid = ?"], [mchid]
        if status:
            where.append("status = ?")
            params.append(status)
        if created_from:
            where.append("created_at >= ?")
            params.append(sortable(created_from))
        if created_to:
            where.append("created_at < ?")
            params.append(sortable(created_to))
        if cursor:
            created, order_id = decode_cursor(cursor)
            where.append("(created_at < ? OR (created_at = ? AND order_id < ?))")
            params += [created, created, order_id]
        rows = self.db.execute(
            f"SELECT view, created_at, order_id FROM order_status WHERE {' AND '.join(where)} "  # noqa: S608 — fixed fragments
            "ORDER BY created_at DESC, order_id DESC LIMIT ?",
            (*params, limit + 1),
        )
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1][1], page[-1][2]) if len(rows) > limit else None
        return [json.loads(r[0]) for r in page], next_cursor

    def created_on(self, mchid: str, day_from: date, day_to: date) -> Iterator[dict[str, Any]]:
        """Every order created on these Beijing days (both included), newest first, page by page (the exports)."""
        start = datetime.combine(day_from, time.min, BEIJING)
        end = datetime.combine(day_to + timedelta(days=1), time.min, BEIJING)
        cursor = None
        while True:
            page, cursor = self.list(mchid, None, start, end, 500, cursor)
            yield from page
            if cursor is None:
                return

    def oldest(self, mchid: str, status: str, limit: int) -> builtins.list[dict[str, Any]]:
        """The oldest orders in ``status``, oldest first (the review queue works through them in that order)."""
        rows = self.db.execute(
            "SELECT view FROM order_status WHERE mchid = ? AND status = ? ORDER BY created_at, order_id LIMIT ?",
            (mchid, status, limit),
        )
        return [json.loads(r[0]) for r in rows]

    def open_orders(self) -> builtins.list[dict[str, Any]]:
        """Orders a payment may still arrive for: what the expiry and query jobs look at."""
        return [
            json.loads(r[0])
            for r in self.db.execute(
                "SELECT view FROM order_status WHERE status IN ('CREATED', 'PAYING') ORDER BY created_at"
            )
        ]

    def orders_with_open_refunds(self) -> builtins.list[dict[str, Any]]:
        return [
            json.loads(r[0])
            for r in self.db.execute("SELECT view FROM order_status WHERE open_refunds > 0 ORDER BY created_at")
        ]

    def paid_latency(self, bounds_ms: Sequence[int]) -> tuple[int, int, builtins.list[int], int]:
        """Orders created, orders paid, how many were paid within each bound (ms after creation), and the sum.

        Durable totals from the view (the same whichever process is scraped), for
        ``zhangben_orders_created_total``, ``…_paid_total`` and the order → paid histogram.
        """
        within = ", ".join(f"SUM(CASE WHEN paid_ms <= {int(b)} THEN 1 ELSE 0 END)" for b in bounds_ms)
        row = self.db.execute(
            f"SELECT COUNT(*), COUNT(paid_ms), COALESCE(SUM(paid_ms), 0), {within} FROM order_status"  # noqa: S608 — ints
        )[0]
        return int(row[0]), int(row[1]), [int(v or 0) for v in row[3:]], int(row[2])

    def counts_by_status(self) -> dict[str, int]:
        return {str(s): int(c) for s, c in self.db.execute("SELECT status, COUNT(*) FROM order_status GROUP BY status")}


def _paid_ms(view: Mapping[str, Any]) -> int | None:
    """From the order's creation to WeChat's success_time, in ms (never negative: the clocks are not the same)."""
    if not view.get("paid_at"):
        return None
    elapsed = datetime.fromisoformat(view["paid_at"]) - datetime.fromisoformat(view["created_at"])
    return max(0, int(elapsed.total_seconds() * 1000))


class CursorError(ValueError):
    pass


def encode_cursor(created_at: str, order_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at}|{order_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        created, order_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        UUID(order_id)
    except (ValueError, UnicodeDecodeError):
        raise CursorError("cursor is not one this API gave out") from None
    return created, order_id
