"""The scheduler's lease table: one row per job in the database: when it is due, who holds it, how it went.

Taking a job is one atomic ``UPDATE … WHERE next_run_at <= now AND the lease
has lapsed``: of several scheduler processes (on PostgreSQL or SQLite), one
gets each due time; the others see nothing due.  A crashed holder's lease
lapses and the next due time runs again — every job is idempotent.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from adapters.viewdb import ViewDatabase, sortable

DDL = [
    "CREATE TABLE IF NOT EXISTS scheduler_jobs (name TEXT PRIMARY KEY, next_run_at TEXT NOT NULL, "
    "lease_owner TEXT, lease_until TEXT, last_started_at TEXT, last_finished_at TEXT, last_status TEXT, "
    "last_error TEXT, last_duration_ms BIGINT, runs BIGINT NOT NULL DEFAULT 0, failures BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS scheduler_checks (kind TEXT NOT NULL, key TEXT NOT NULL, checks INTEGER NOT NULL, "
    "last_at TEXT NOT NULL, PRIMARY KEY (kind, key))",
]
LEASE = timedelta(minutes=10)


def stamp(moment: datetime) -> str:
    return sortable(moment)


@dataclass(frozen=True)
class JobState:
    name: str
    next_run_at: str
    last_started_at: str | None
    last_finished_at: str | None
    last_status: str | None
    last_error: str | None
    last_duration_ms: int | None
    runs: int
    failures: int


def owner_id() -> str:
    """Who holds a lease: host, process and a random part (a restarted process is someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Leases:
    def __init__(self, db: ViewDatabase) -> None:
        self.db = db
        self.owner = owner_id()

    def create_tables(self) -> None:
        for statement in DDL:
            self.db.execute(statement)

    def register(self, name: str, first_run_at: datetime) -> None:
        self.db.execute(
            "INSERT INTO scheduler_jobs (name, next_run_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (name, stamp(first_run_at)),
        )

    def take(self, name: str, now: datetime) -> bool:
        """Hold the job for this due time, or learn that it is not due or someone else holds it."""
        moved = self.db.rowcount(
            "UPDATE scheduler_jobs SET lease_owner = ?, lease_until = ?, last_started_at = ? "
            "WHERE name = ? AND next_run_at <= ? AND (lease_until IS NULL OR lease_until < ?)",
            (self.owner, stamp(now + LEASE), stamp(now), name, stamp(now), stamp(now)),
        )
        return moved == 1

    def finish(self, name: str, now: datetime, next_run_at: datetime, error: str | None, duration_ms: int) -> None:
        self.db.execute(
            "UPDATE scheduler_jobs SET lease_owner = NULL, lease_until = NULL, next_run_at = ?, last_finished_at = ?, "
            "last_status = ?, last_error = ?, last_duration_ms = ?, runs = runs + 1, failures = failures + ? "
            "WHERE name = ? AND lease_owner = ?",
            (
                stamp(next_run_at),
                stamp(now),
                "failed" if error else "ok",
                error,
                duration_ms,
                1 if error else 0,
                name,
                self.owner,
            ),
        )

    def states(self) -> list[JobState]:
        rows = self.db.execute(
            "SELECT name, next_run_at, last_started_at, last_finished_at, last_status, last_error, last_duration_ms, "
            "runs, failures FROM scheduler_jobs ORDER BY name"
        )
        return [JobState(*row) for row in rows]

    # -- per-item backoff (how many times a payment or refund was checked) ---------------------

    def checks(self, kind: str, key: str) -> int:
        rows = self.db.execute("SELECT checks FROM scheduler_checks WHERE kind = ? AND key = ?", (kind, key))
        return int(rows[0][0]) if rows else 0

    def checked(self, kind: str, key: str, now: datetime) -> None:
        self.db.execute(
            "INSERT INTO scheduler_checks (kind, key, checks, last_at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (kind, key) DO UPDATE SET checks = scheduler_checks.checks + 1, last_at = excluded.last_at",
            (kind, key, stamp(now)),
        )


def as_dict(state: JobState) -> dict[str, Any]:
    return state.__dict__.copy()
