"""The order status view: one row per order, what the list endpoint filters and pages on.

Each batch of events names the orders it touched; each touched order's row is
rewritten from the order's aggregates, and the batch's position is stored in
the same transaction.  Rewriting a whole row is idempotent, so a batch that
runs twice after a crash changes nothing; the position guard (it only moves
forward) stops two runners from interleaving.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from projections.viewdb import ViewDatabase
from zhangben.ledger import Ledger

log = logging.getLogger("zhangben.projections")

NAME = "order_status"
DDL = [
    "CREATE TABLE IF NOT EXISTS projection_tracking (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS order_status (order_id TEXT PRIMARY KEY, mchid TEXT NOT NULL, "
    "merchant_order_no TEXT NOT NULL, status TEXT NOT NULL, amount_fen BIGINT NOT NULL, paid_fen BIGINT NOT NULL, "
    "refunded_fen BIGINT NOT NULL, created_at TEXT NOT NULL, version BIGINT NOT NULL, view TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS order_status_by_created ON order_status (mchid, created_at, order_id)",
    "CREATE INDEX IF NOT EXISTS order_status_by_status ON order_status (mchid, status, created_at)",
]
UPSERT = (
    "INSERT INTO order_status (order_id, mchid, merchant_order_no, status, amount_fen, paid_fen, refunded_fen, "
    "created_at, version, view) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO UPDATE SET "
    "status = excluded.status, paid_fen = excluded.paid_fen, refunded_fen = excluded.refunded_fen, "
    "version = excluded.version, view = excluded.view"
)
BATCH = 500


def sortable(moment: datetime) -> str:
    """UTC with fixed width, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class OrderStatusView:
    def __init__(self, ledger: Ledger, db: ViewDatabase) -> None:
        self.ledger = ledger
        self.db = db
        self._order_of: dict[UUID, UUID] = {}  # payment or refund id → order id

    def create_tables(self) -> None:
        for statement in DDL:
            self.db.execute(statement)
        self.db.execute("INSERT INTO projection_tracking (name, position) VALUES (?, 0) ON CONFLICT (name) DO NOTHING",
                        (NAME,))

    # -- following the log ---------------------------------------------------------------

    @property
    def position(self) -> int:
        rows = self.db.execute("SELECT position FROM projection_tracking WHERE name = ?", (NAME,))
        return int(rows[0][0]) if rows else 0

    def _order_id(self, topic: str, originator_id: UUID) -> UUID | None:
        if topic.startswith("zhangben.Order."):
            return originator_id
        if topic.startswith(("zhangben.Payment.", "zhangben.Refund.")):
            if originator_id not in self._order_of:
                self._order_of[originator_id] = self.ledger.repository.get(originator_id).order_id
            return self._order_of[originator_id]
        return None

    def process_batch(self, limit: int = BATCH) -> int:
        """Apply the next batch of events; returns how many were read."""
        start = self.position
        notifications = self.ledger.recorder.select_notifications(start, limit, inclusive_of_start=False)
        if not notifications:
            return 0
        touched: dict[UUID, None] = {}
        for n in notifications:
            order_id = self._order_id(n.topic, n.originator_id)
            if order_id is not None:
                touched[order_id] = None
        rows = [self._row(self.ledger.order_view_by_id(order_id), order_id) for order_id in touched]
        with self.db.transaction():
            moved = self.db.rowcount("UPDATE projection_tracking SET position = ? WHERE name = ? AND position = ?",
                                     (notifications[-1].id, NAME, start))
            if moved != 1:
                raise RuntimeError("another runner moved the order_status position; this batch is discarded")
            for row in rows:
                self.db.execute(UPSERT, row)
        return len(notifications)

    @staticmethod
    def _row(view: dict[str, Any], order_id: UUID) -> tuple[Any, ...]:
        return (str(order_id), view["mchid"], view["merchant_order_no"], view["status"], view["amount_fen"],
                view["paid_fen"], view["refunded_fen"], sortable(datetime.fromisoformat(view["created_at"])),
                view["version"], json.dumps(view, ensure_ascii=False))

    def catch_up(self) -> int:
        total = 0
        while (count := self.process_batch()) > 0:
            total += count
        return total

    def wait_for(self, position: int, timeout: float = 1.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.position < position:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def lag(self) -> int:
        return max(0, (self.ledger.recorder.max_notification_id() or 0) - self.position)

    # -- queries ---------------------------------------------------------------------------

    def list(self, mchid: str, status: str | None = None, created_from: datetime | None = None,
             created_to: datetime | None = None, limit: int = 20, cursor: str | None = None,
             ) -> tuple[list[dict[str, Any]], str | None]:
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
            "ORDER BY created_at DESC, order_id DESC LIMIT ?", (*params, limit + 1))
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1][1], page[-1][2]) if len(rows) > limit else None
        return [json.loads(r[0]) for r in page], next_cursor

    def counts_by_status(self) -> dict[str, int]:
        return {str(s): int(c) for s, c in self.db.execute("SELECT status, COUNT(*) FROM order_status GROUP BY status")}


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


class ProjectionRunner:
    """Runs a view in a thread, restarted after an error with backoff (the error logged and counted)."""

    def __init__(self, view: OrderStatusView, poll_seconds: float = 0.05) -> None:
        self.view = view
        self.poll_seconds = poll_seconds
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"projection-{NAME}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if self.view.process_batch() == 0:
                    self._stop.wait(self.poll_seconds)
                backoff = 0.1
            except Exception:  # noqa: BLE001 — supervised: log, count, back off, carry on
                self.errors += 1
                log.exception("projection %s failed; retrying in %.1fs", NAME, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
