"""Following the event log, exactly once, on SQLite and PostgreSQL alike.

SQLite has no subscriptions, so every store is followed the same way: read
the next page of the notification log after the projection's position, let
the projection prepare its rows (reads happen outside the write
transaction), then write the rows and the new position in one transaction.
The position only moves forward from where this batch started, so a crash at
any point loses nothing and doubles nothing: the batch is simply done again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast
from uuid import UUID

from eventsourcing.application import Repository
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import ApplicationRecorder, Mapper, Notification

from adapters.persistence import is_unavailable
from adapters.recorders import Streams, read_streams, replay
from adapters.viewdb import ViewDatabase

log = logging.getLogger("zhangben.projections")

TRACKING_DDL = "CREATE TABLE IF NOT EXISTS projection_tracking (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
BATCH = 500
REBUILD_BATCH = 5000  # a replay reads the log in large pages: fewer round trips, an order's events mostly together


SHARED_STREAMS_MAX = 20_000


@dataclass(frozen=True)
class EventLog:
    """The ledger's event log as a projection reads it, handed over by ``bootstrap``.

    ``recorder`` pages through the log, ``mapper`` turns a stored record into
    its domain event, ``repository`` loads an aggregate by id.  ``streams_through``
    shares the streams read for one batch among the projections that process
    the same stretch of the log (the order view and the business events read the
    same orders): a stream read after a batch ending at position ``P`` was
    selected holds every event up to ``P``, so it serves any batch ending at or
    before ``P`` and no later one.
    """

    recorder: ApplicationRecorder
    mapper: Mapper[UUID]
    repository: Repository[UUID]
    _shared: dict[UUID, tuple[int, list[DomainEvent]]] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def streams_through(self, position: int) -> Streams:
        """A stream reader for a batch that ends at ``position``, sharing what others read for it."""

        def read(aggregate_ids: Iterable[UUID]) -> dict[UUID, list[DomainEvent]]:
            wanted = set(aggregate_ids)
            with self._lock:
                found = {i: hit[1] for i in wanted if (hit := self._shared.get(i)) is not None and hit[0] >= position}
            missing = wanted - found.keys()
            loaded = read_streams(self.recorder, self.mapper, missing) if missing else {}
            with self._lock:
                if len(self._shared) + len(loaded) > SHARED_STREAMS_MAX:
                    self._shared.clear()
                self._shared.update((i, (position, events)) for i, events in loaded.items())
            return found | loaded

        return read

    def aggregates(self, aggregate_ids: Iterable[UUID], through: int) -> dict[UUID, Any]:
        """Several aggregates, read in one query (or shared, for a batch ending at ``through``); absent ones left out."""
        streams = self.streams_through(through)(aggregate_ids)
        return {aggregate_id: replay(None, events) for aggregate_id, events in streams.items()}


Prepared = TypeVar("Prepared")


class Projection(Protocol[Prepared]):
    """A read model: what a batch of the log needs is read first (``prepare``), then written (``write``)."""

    @property
    def name(self) -> str: ...

    @property
    def tables(self) -> Sequence[str]: ...

    def create_tables(self) -> bool:
        """Make the tables; True when an existing table changed shape and the log must be replayed into it."""
        ...

    def prepare(self, notifications: Sequence[Notification]) -> Prepared:
        """Read what the batch needs; no writes."""
        ...

    def write(self, prepared: Prepared) -> None:
        """Write the batch's rows (called inside the batch's transaction)."""
        ...


class PositionMoved(RuntimeError):
    """Another runner advanced this projection: this batch is discarded, nothing is lost."""


class Follower:
    """One projection following one ledger's log."""

    def __init__(self, log: EventLog, db: ViewDatabase, projection: Projection[Any]) -> None:
        self.log = log
        self.db = db
        self.projection = projection

    def create_tables(self) -> None:
        self.db.execute(TRACKING_DDL)
        self.db.execute(
            "INSERT INTO projection_tracking (name, position) VALUES (?, 0) ON CONFLICT (name) DO NOTHING",
            (self.projection.name,),
        )
        if self.projection.create_tables():  # a column an upgrade added is filled by replaying the log
            self.db.execute("UPDATE projection_tracking SET position = 0 WHERE name = ?", (self.projection.name,))

    @property
    def position(self) -> int:
        rows = self.db.execute("SELECT position FROM projection_tracking WHERE name = ?", (self.projection.name,))
        return int(rows[0][0]) if rows else 0

    def process_batch(self, limit: int = BATCH, stop: int | None = None) -> int:
        """The next batch after the position (up to ``stop`` when given), prepared then written with the position."""
        start = self.position
        notifications = self.log.recorder.select_notifications(start, limit, stop=stop, inclusive_of_start=False)
        if not notifications:
            return 0
        prepared = self.projection.prepare(notifications)
        with self.db.transaction():
            moved = self.db.rowcount(
                "UPDATE projection_tracking SET position = ? WHERE name = ? AND position = ?",
                (notifications[-1].id, self.projection.name, start),
            )
            if moved != 1:
                raise PositionMoved(f"{self.projection.name}: position moved by another runner")
            self.projection.write(prepared)
        return len(notifications)

    def catch_up(self, progress: Callable[[int], None] | None = None, limit: int = BATCH) -> int:
        total = 0
        while (count := self.process_batch(limit)) > 0:
            total += count
            if progress:
                progress(total)
        return total

    def bring_up_to_date(self, timeout: float = 5.0) -> None:
        """Include everything recorded so far: catch up here, or wait for the runner elsewhere that is."""
        target = self.log.head()
        if self.position >= target:
            return
        try:
            self.catch_up()
        except PositionMoved:
            self.wait_for(target, timeout)

    def lag(self) -> int:
        return max(0, self.log.head() - self.position)

    def lag_seconds(self, now: datetime) -> float:
        """How old the oldest event not yet in the view is (0 when the view is current)."""
        pending = self.log.recorder.select_notifications(self.position, 1, inclusive_of_start=False)
        if not pending:
            return 0.0
        event = cast(DomainEvent, self.log.mapper.to_domain_event(pending[0]))
        return max(0.0, (now - event.timestamp).total_seconds())

    def wait_for(self, position: int, timeout: float = 1.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.position < position:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Drop the projection's rows and replay the whole log into it."""
        with self.db.transaction():
            for table in self.projection.tables:
                self.db.execute(f"DELETE FROM {table}")  # noqa: S608 — table names are the projection's own
            self.db.execute("UPDATE projection_tracking SET position = 0 WHERE name = ?", (self.projection.name,))
        try:
            return self.catch_up(progress, REBUILD_BATCH)
        except PositionMoved:
            # a running runner (`serve`'s, say) follows this projection too and took the replay over from the
            # reset: wait until it has reached the end of the log rather than fight it for every batch
            self.wait_for(self.log.head(), timeout=REBUILD_WAIT_SECONDS)
            return self.position


REBUILD_WAIT_SECONDS = 600.0


class Runner:
    """Runs followers in a thread, supervised: an error is logged and counted, then retried with backoff."""

    def __init__(self, followers: Sequence[Follower], poll_seconds: float = 0.05) -> None:
        self.followers = list(followers)
        self.poll_seconds = poll_seconds
        self.errors: dict[str, int] = {f.projection.name: 0 for f in self.followers}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="projections", daemon=True)
        self._thread.start()

    def run(self) -> None:
        backoff = {f.projection.name: 0.1 for f in self.followers}
        retry_at = {f.projection.name: 0.0 for f in self.followers}
        while not self._stop.is_set():
            busy = False
            # every follower of this round stops at the same position, so followers that are level process the
            # same stretch of the log and share what they read for it (EventLog.streams_through)
            stop = self._head()
            for follower in self.followers:
                name = follower.projection.name
                if time.monotonic() < retry_at[name]:
                    continue
                try:
                    busy = follower.process_batch(stop=stop) > 0 or busy
                    backoff[name] = 0.1
                except Exception as exc:  # supervised: log, count, back off, carry on
                    self.errors[name] += 1
                    if is_unavailable(exc):  # an outage: one line, no traceback; it resumes when the database is back
                        log.warning("projection %s: database unavailable; retrying in %.1fs", name, backoff[name])
                    else:
                        log.exception("projection %s failed; retrying in %.1fs", name, backoff[name])
                    retry_at[name] = time.monotonic() + backoff[name]
                    backoff[name] = min(backoff[name] * 2, 5.0)
            if not busy:
                self._stop.wait(self.poll_seconds)

    def _head(self) -> int | None:
        try:
            return self.followers[0].log.head() if self.followers else None
        except Exception:  # noqa: BLE001 — an outage: each follower's own call will fail, be logged and backed off
            return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
