"""Webhook endpoints, their delivery queue and the record of every attempt, in the view database.

Deliveries are at-least-once from the business-event log: each endpoint has
a position in that log; moving it and queueing the deliveries it passed is
one transaction, so nothing is skipped and nothing queued twice.  A delivery
is claimed with a lease (one atomic ``UPDATE … WHERE the lease has lapsed``),
so of several workers exactly one sends it at a time; a worker that dies
mid-send leaves a lease that lapses, and the delivery is sent again.  Per
endpoint and order, a delivery waits until the ones before it are settled,
so a receiver sees each order's events in order.

The signature is the Stripe scheme (https://docs.stripe.com/webhooks#verify-manually):
``Zhangben-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``,
with a second ``v1`` while a rotated-out secret is still in its grace period.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from adapters.leases import owner_id
from adapters.secretbox import DataKeys, NoDataKey, is_sealed
from adapters.viewdb import ViewDatabase, sortable
from adapters.wechatpay.beijing import BEIJING

DDL = [
    "CREATE TABLE IF NOT EXISTS webhook_endpoints (id TEXT PRIMARY KEY, mchid TEXT NOT NULL, url TEXT NOT NULL, "
    "types TEXT NOT NULL, secret TEXT NOT NULL, old_secret TEXT, old_secret_until TEXT, created_at TEXT NOT NULL, "
    "position BIGINT NOT NULL, state TEXT NOT NULL, failing_since TEXT)",
    "CREATE TABLE IF NOT EXISTS webhook_deliveries (endpoint_id TEXT NOT NULL, seq BIGINT NOT NULL, "
    "order_id TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at TEXT NOT NULL, "
    "lease_owner TEXT, lease_until TEXT, PRIMARY KEY (endpoint_id, seq))",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (state, next_at)",
    "CREATE TABLE IF NOT EXISTS webhook_attempts (endpoint_id TEXT NOT NULL, seq BIGINT NOT NULL, "
    "attempt INTEGER NOT NULL, at TEXT NOT NULL, status_code INTEGER, latency_ms INTEGER, error TEXT, "
    "response TEXT, PRIMARY KEY (endpoint_id, seq, attempt))",
]
LEASE = timedelta(seconds=60)
SIGNATURE_HEADER = "Zhangben-Signature"


def beijing(stored: str | None) -> str | None:
    """A stored time (UTC, sortable text) as people and clients see times: Beijing, with +08:00."""
    if stored is None:
        return None
    return datetime.fromisoformat(stored.replace("Z", "+00:00")).astimezone(BEIJING).isoformat()


def signature_header(secrets_in_use: Sequence[str], timestamp: int, body: bytes) -> str:
    """``t=…,v1=…[,v1=…]``: one ``v1`` per secret still valid (the new one first)."""
    signed = f"{timestamp}.".encode() + body
    parts = [f"t={timestamp}"]
    parts += [f"v1={hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()}" for s in secrets_in_use]
    return ",".join(parts)


def verify_signature(header: str, body: bytes, secret: str, now: int, tolerance: int = 300) -> bool:
    """What a receiver does (docs/webhooks.md): a ``v1`` matches under the secret, and ``t`` is fresh."""
    fields = [f.split("=", 1) for f in header.split(",") if "=" in f]
    t = dict(fields).get("t", "")
    if not t.isdigit() or abs(now - int(t)) > tolerance:
        return False
    good = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(k == "v1" and hmac.compare_digest(v, good) for k, v in fields)


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Endpoint:
    id: str
    mchid: str
    url: str
    types: list[str]
    secret: str
    old_secret: str | None
    old_secret_until: str | None
    created_at: str
    position: int
    state: str  # active | failing | deleted
    failing_since: str | None

    def secrets_at(self, now: datetime) -> list[str]:
        valid = [self.secret]
        if self.old_secret and self.old_secret_until and self.old_secret_until > sortable(now):
            valid.append(self.old_secret)
        return valid

    def public(self) -> dict[str, Any]:
        """What an answer may show: never a secret."""
        return {
            "id": self.id,
            "url": self.url,
            "event_types": self.types,
            "state": self.state,
            "created_at": beijing(self.created_at),
            "failing_since": beijing(self.failing_since),
            "previous_secret_valid_until": beijing(self.old_secret_until),
        }


@dataclass(frozen=True)
class Delivery:
    endpoint_id: str
    seq: int
    order_id: str
    attempts: int


_ENDPOINT_COLUMNS = (
    "id, mchid, url, types, secret, old_secret, old_secret_until, created_at, position, state, failing_since"
)


def _context(endpoint_id: str) -> str:
    """What a sealed secret is bound to: its endpoint (the current and the previous secret alike)."""
    return f"webhook_endpoints/{endpoint_id}"


class WebhookStore:
    """Endpoints, their secrets sealed under the data key (``adapters.secretbox``), and the delivery queue."""

    def __init__(self, db: ViewDatabase, box: DataKeys | None = None) -> None:
        self.db = db
        self.box = box
        self.owner = owner_id()

    def _seal(self, endpoint_id: str, secret: str) -> str:
        if self.box is None:
            raise NoDataKey("a webhook endpoint (its signing secret)")
        return self.box.seal(secret, _context(endpoint_id))

    def _open(self, endpoint_id: str, value: str | None) -> str | None:
        if value is None:
            return None
        if self.box is None:
            if is_sealed(value):
                raise NoDataKey("signing a webhook delivery")
            return value
        return self.box.open(value, _context(endpoint_id))

    def _endpoint(self, row: Sequence[Any]) -> Endpoint:
        secret = self._open(row[0], row[4]) or ""
        old = self._open(row[0], row[5])
        return Endpoint(
            row[0], row[1], row[2], json.loads(row[3]), secret, old, row[6], row[7], int(row[8]), row[9], row[10]
        )

    def reseal(self) -> int:
        """Seal every secret kept in clear (from before sealing) or under an older data key; how many endpoints."""
        if self.box is None:
            return 0
        changed = 0
        for endpoint_id, secret, old in self.db.execute("SELECT id, secret, old_secret FROM webhook_endpoints"):
            if self.box.needs_reseal(secret) or (old is not None and self.box.needs_reseal(old)):
                plain, plain_old = self._open(endpoint_id, secret) or "", self._open(endpoint_id, old)
                self.db.execute(
                    "UPDATE webhook_endpoints SET secret = ?, old_secret = ? WHERE id = ? AND secret = ?",
                    (
                        self._seal(endpoint_id, plain),
                        None if plain_old is None else self._seal(endpoint_id, plain_old),
                        endpoint_id,
                        secret,
                    ),
                )
                changed += 1
        return changed

    def create_tables(self) -> None:
        for statement in DDL:
            self.db.execute(statement)

    # -- endpoints -----------------------------------------------------------------------------

    def add_endpoint(self, mchid: str, url: str, types: list[str], position: int, now: datetime) -> Endpoint:
        endpoint_id = "we_" + uuid.uuid4().hex[:20]
        self.db.execute(
            f"INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?, 'active', NULL)",  # noqa: S608 — fixed column list
            (
                endpoint_id,
                mchid,
                url,
                json.dumps(types),
                self._seal(endpoint_id, new_secret()),
                sortable(now),
                position,
            ),
        )
        found = self.endpoint(endpoint_id)
        assert found is not None  # noqa: S101 — just written
        return found

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        rows = self.db.execute(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ? AND state <> 'deleted'",  # noqa: S608
            (endpoint_id,),
        )
        return self._endpoint(rows[0]) if rows else None

    def endpoints(self, mchid: str | None = None) -> list[Endpoint]:
        where, params = "state <> 'deleted'", []
        if mchid is not None:
            where += " AND mchid = ?"
            params.append(mchid)
        rows = self.db.execute(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE {where} ORDER BY created_at, id",  # noqa: S608
            params,
        )
        return [self._endpoint(r) for r in rows]

    def delete_endpoint(self, endpoint_id: str) -> None:
        with self.db.transaction():
            self.db.execute("UPDATE webhook_endpoints SET state = 'deleted' WHERE id = ?", (endpoint_id,))
            self.db.execute(
                "DELETE FROM webhook_deliveries WHERE endpoint_id = ? AND state = 'pending'", (endpoint_id,)
            )

    def rotate_secret(self, endpoint_id: str, grace_until: datetime) -> Endpoint:
        self.db.execute(
            "UPDATE webhook_endpoints SET old_secret = secret, old_secret_until = ?, secret = ? WHERE id = ?",
            (sortable(grace_until), self._seal(endpoint_id, new_secret()), endpoint_id),
        )
        found = self.endpoint(endpoint_id)
        assert found is not None  # noqa: S101 — the caller checked it exists
        return found

    def mark_failing(self, endpoint_id: str, now: datetime) -> None:
        self.db.execute(
            "UPDATE webhook_endpoints SET state = 'failing', failing_since = COALESCE(failing_since, ?) "
            "WHERE id = ? AND state <> 'deleted'",
            (sortable(now), endpoint_id),
        )

    def mark_healthy(self, endpoint_id: str) -> None:
        self.db.execute(
            "UPDATE webhook_endpoints SET state = 'active', failing_since = NULL WHERE id = ? AND state = 'failing'",
            (endpoint_id,),
        )

    # -- the queue ---------------------------------------------------------------------------------

    def enqueue(self, endpoint: Endpoint, events: Sequence[tuple[int, str]], now: datetime) -> bool:
        """Queue ``(seq, order_id)`` deliveries and move the endpoint past them, in one transaction."""
        if not events:
            return False
        with self.db.transaction():
            moved = self.db.rowcount(
                "UPDATE webhook_endpoints SET position = ? WHERE id = ? AND position = ?",
                (events[-1][0], endpoint.id, endpoint.position),
            )
            if moved != 1:
                return False  # another worker queued these first
            self.db.executemany(
                "INSERT INTO webhook_deliveries (endpoint_id, seq, order_id, state, attempts, next_at) "
                "VALUES (?, ?, ?, 'pending', 0, ?) ON CONFLICT (endpoint_id, seq) DO NOTHING",
                [(endpoint.id, seq, order_id, sortable(now)) for seq, order_id in events],
            )
        return True

    def skip_to(self, endpoint: Endpoint, position: int) -> None:
        """Move past events that are not for this endpoint (other types): nothing to queue for them."""
        self.db.execute(
            "UPDATE webhook_endpoints SET position = ? WHERE id = ? AND position = ?",
            (position, endpoint.id, endpoint.position),
        )

    def due(self, now: datetime, limit: int) -> list[Delivery]:
        """Pending, due, not held by a live lease, and first of their order for their endpoint."""
        rows = self.db.execute(
            "SELECT d.endpoint_id, d.seq, d.order_id, d.attempts FROM webhook_deliveries d "
            "WHERE d.state = 'pending' AND d.next_at <= ? AND (d.lease_until IS NULL OR d.lease_until < ?) "
            "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.endpoint_id = d.endpoint_id "
            "AND e.order_id = d.order_id AND e.seq < d.seq AND e.state = 'pending') "
            "ORDER BY d.next_at, d.seq LIMIT ?",
            (sortable(now), sortable(now), limit),
        )
        return [Delivery(r[0], int(r[1]), r[2], int(r[3])) for r in rows]

    def claim(self, delivery: Delivery, now: datetime) -> bool:
        moved = self.db.rowcount(
            "UPDATE webhook_deliveries SET lease_owner = ?, lease_until = ? WHERE endpoint_id = ? AND seq = ? "
            "AND state = 'pending' AND attempts = ? AND (lease_until IS NULL OR lease_until < ?)",
            (self.owner, sortable(now + LEASE), delivery.endpoint_id, delivery.seq, delivery.attempts, sortable(now)),
        )
        return moved == 1

    def record_attempt(
        self,
        delivery: Delivery,
        now: datetime,
        status_code: int | None,
        latency_ms: int,
        error: str | None,
        response: str,
        next_at: datetime | None,
    ) -> None:
        """The attempt, and what the delivery becomes: delivered (2xx), due again at ``next_at``, or failed."""
        delivered = status_code is not None and 200 <= status_code < 300
        state = "delivered" if delivered else ("pending" if next_at is not None else "failed")
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO webhook_attempts (endpoint_id, seq, attempt, at, status_code, latency_ms, error, response) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, seq, attempt) DO NOTHING",
                (
                    delivery.endpoint_id,
                    delivery.seq,
                    delivery.attempts + 1,
                    sortable(now),
                    status_code,
                    latency_ms,
                    error,
                    response[:1024],
                ),
            )
            self.db.execute(
                "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, next_at = ?, lease_owner = NULL, "
                "lease_until = NULL WHERE endpoint_id = ? AND seq = ? AND lease_owner = ?",
                (state, sortable(next_at or now), delivery.endpoint_id, delivery.seq, self.owner),
            )

    def redeliver(self, endpoint_ids: Sequence[str], seq: int, order_id: str, now: datetime) -> int:
        """Send an event again to these endpoints (queued anew if it had been delivered or given up)."""
        count = 0
        for endpoint_id in endpoint_ids:
            self.db.execute(
                "INSERT INTO webhook_deliveries (endpoint_id, seq, order_id, state, attempts, next_at) "
                "VALUES (?, ?, ?, 'pending', 0, ?) ON CONFLICT (endpoint_id, seq) DO UPDATE SET state = 'pending', "
                "next_at = excluded.next_at, lease_owner = NULL, lease_until = NULL",
                (endpoint_id, seq, order_id, sortable(now)),
            )
            count += 1
        return count

    def attempts(self, seq: int, endpoint_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not endpoint_ids:
            return []
        wanted = set(endpoint_ids)
        rows = [
            r
            for r in self.db.execute(
                "SELECT a.endpoint_id, a.attempt, a.at, a.status_code, a.latency_ms, a.error, a.response, d.state "
                "FROM webhook_attempts a LEFT JOIN webhook_deliveries d "
                "ON d.endpoint_id = a.endpoint_id AND d.seq = a.seq WHERE a.seq = ? ORDER BY a.at, a.attempt",
                (seq,),
            )
            if r[0] in wanted
        ]
        return [
            {
                "endpoint_id": r[0],
                "attempt": int(r[1]),
                "at": beijing(r[2]),
                "status_code": r[3],
                "latency_ms": r[4],
                "error": r[5],
                "response": r[6],
                "delivery_state": r[7],
            }
            for r in rows
        ]

    def recent_attempts(self, endpoint_ids: Sequence[str], limit: int = 50) -> list[dict[str, Any]]:
        """The latest delivery attempts to these endpoints, newest first (the console's 推送 page)."""
        if not endpoint_ids:
            return []
        marks = ", ".join("?" for _ in endpoint_ids)
        rows = self.db.execute(
            "SELECT a.endpoint_id, a.seq, a.attempt, a.at, a.status_code, a.latency_ms, a.error, d.state "  # noqa: S608 — placeholders only
            "FROM webhook_attempts a LEFT JOIN webhook_deliveries d ON d.endpoint_id = a.endpoint_id AND d.seq = a.seq "
            f"WHERE a.endpoint_id IN ({marks}) ORDER BY a.at DESC, a.attempt DESC LIMIT ?",
            (*endpoint_ids, limit),
        )
        return [
            {
                "endpoint_id": r[0],
                "seq": int(r[1]),
                "attempt": int(r[2]),
                "at": beijing(r[3]),
                "status_code": r[4],
                "latency_ms": r[5],
                "error": r[6],
                "delivery_state": r[7],
            }
            for r in rows
        ]

    def counts(self) -> dict[str, int]:
        """Deliveries by state, and endpoints failing: for the metrics."""
        out = {
            str(s): int(c) for s, c in self.db.execute("SELECT state, COUNT(*) FROM webhook_deliveries GROUP BY state")
        }
        failing = self.db.execute("SELECT COUNT(*) FROM webhook_endpoints WHERE state = 'failing'")
        out["endpoints_failing"] = int(failing[0][0]) if failing else 0
        return out
