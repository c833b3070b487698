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
from collections.abc import Callable, Iterable, Mapping, Sequence
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


SHARED_STREAMS_MAX = 20_000  # aggregates whose streams a process keeps for its projections
SHARED_EVENTS_MAX = 50_000  # decoded events kept for the other projections of the round


class KeptStreams:
    """Aggregates' streams a process keeps for its projections, each complete through ``seen``.

    Every batch of the log that a projection here prepares is first applied to
    what is kept (``advance``): a batch holds every event whose id lies between
    its follower's position and its last id (ids become visible in commit order:
    ``adapters.recorders``), and an aggregate's versions follow its ids, so a
    stream complete through ``seen`` and a batch that starts at or before
    ``seen`` give the stream complete through the batch's end.  A batch that
    starts past ``seen`` (a gap: a follower far ahead of the others) cannot
    carry anything forward, and what is kept is dropped.  A stream read from the
    store is kept only if no batch was applied while it was read: the read is
    then complete through ``seen``, whose batch was selected before it began.
    """

    def __init__(self, limit: int = SHARED_STREAMS_MAX) -> None:
        self.limit = limit
        self.streams: dict[UUID, list[DomainEvent]] = {}
        self.seen: int | None = None  # every stream kept is complete through this id
        self.advances = 0  # batches applied: a read that saw this change is not kept
        self.lock = threading.Lock()

    def advance(self, first: int, last: int, in_batch: Mapping[UUID, list[DomainEvent]]) -> None:
        with self.lock:
            self.advances += 1
            if self.seen is None or first - 1 > self.seen:
                self.streams.clear()
                self.seen = last
                return
            for aggregate_id, events in in_batch.items():
                kept = self.streams.get(aggregate_id)
                if kept is not None and events[-1].originator_version > kept[-1].originator_version:
                    newest = kept[-1].originator_version
                    self.streams[aggregate_id] = kept + [e for e in events if e.originator_version > newest]
            self.seen = max(self.seen, last)

    def keep(self, streams: Mapping[UUID, list[DomainEvent]], advances: int) -> None:
        """Keep streams read from the store, if no batch was applied since ``advances`` was read."""
        with self.lock:
            if advances != self.advances:
                return
            if len(self.streams) + len(streams) > self.limit:
                self.streams.clear()
            self.streams.update(streams)


@dataclass(frozen=True)
class EventLog:
    """The ledger's event log as a projection reads it, handed over by ``bootstrap``.

    ``recorder`` pages through the log, ``mapper`` turns a stored record into
    its domain event, ``repository`` loads an aggregate by id.  ``streams_for(batch)``
    reads aggregates' events for a batch of the log: what the projections of this
    process have read before is kept and carried forward with each batch's own
    events (``KeptStreams``), not read and decoded again; an aggregate whose first
    event is in the batch is the batch's events alone.  A decoded event is shared
    too (``event``): the projections of one round decode a stored event once.
    """

    recorder: ApplicationRecorder
    mapper: Mapper[UUID]
    repository: Repository[UUID]
    kept: KeptStreams = field(default_factory=KeptStreams, compare=False, repr=False)
    _decoded: dict[int, DomainEvent] = field(default_factory=dict, compare=False, repr=False)
    _grouped: dict[tuple[int, int], dict[UUID, list[DomainEvent]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def event(self, notification: Notification) -> DomainEvent:
        """The notification's domain event, decoded once for every projection that follows this log here."""
        event = self._decoded.get(notification.id)
        if event is None:
            event = cast(DomainEvent, self.mapper.to_domain_event(notification))
            if len(self._decoded) >= SHARED_EVENTS_MAX:
                self._decoded.clear()
            self._decoded[notification.id] = event
        return event

    def streams_for(self, notifications: Sequence[Notification]) -> Streams:
        """A stream reader for this batch of the log: every event of each aggregate asked for, at least through
        the batch's last id — kept ones carried forward with the batch's own events, the rest read in one query."""
        first, last = notifications[0].id, notifications[-1].id
        in_batch = self._batch(first, last, notifications)
        kept = self.kept

        def read(aggregate_ids: Iterable[UUID]) -> dict[UUID, list[DomainEvent]]:
            found: dict[UUID, list[DomainEvent]] = {}
            born: dict[UUID, list[DomainEvent]] = {}
            missing: set[UUID] = set()
            with kept.lock:
                advances, newest = kept.advances, kept.seen == last
                for i in set(aggregate_ids):
                    events = kept.streams.get(i)
                    batch = in_batch.get(i)
                    if events is not None:
                        found[i] = events
                    elif batch is not None and batch[0].originator_version == 1:
                        found[i] = batch  # born in this batch: all of it through the batch's end is here
                        if newest:  # and nothing after the batch was applied: keep it
                            born[i] = batch
                    else:
                        missing.add(i)
            loaded = read_streams(self.recorder, self.mapper, missing) if missing else {}
            kept.keep(born | loaded, advances)
            return found | loaded

        return read

    def _batch(self, first: int, last: int, notifications: Sequence[Notification]) -> dict[UUID, list[DomainEvent]]:
        """The batch's events by aggregate, applied to what is kept — once per batch, however many projections
        (and calls of each) read for it: the followers of one round process the same stretch of the log."""
        known = self._grouped.get((first, last))
        if known is not None:
            return known
        in_batch: dict[UUID, list[DomainEvent]] = {}
        for n in notifications:
            event = self.event(n)
            in_batch.setdefault(event.originator_id, []).append(event)
        self.kept.advance(first, last, in_batch)
        self._grouped.clear()  # only the latest batch: a lagging follower's batch is grouped again, harmlessly
        self._grouped[(first, last)] = in_batch
        return in_batch

    def aggregates(self, aggregate_ids: Iterable[UUID], notifications: Sequence[Notification]) -> dict[UUID, Any]:
        """Several aggregates as of this batch (kept, carried forward, or read in one query); absent ones left out."""
        streams = self.streams_for(notifications)(aggregate_ids)
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
            # same stretch of the log and share what they read and decode for it (EventLog.streams_for)
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
