"""The event store from the event loop: a worker's hot path reads and saves without a thread hop.

``serve``'s workers answer on an asyncio event loop, and every command used to
go to a thread (``asyncio.to_thread``) because the event store library is
synchronous: the hand-off, and the contention for the GIL that follows it, were
the largest single item in a worker's profile per callback (docs/performance.md).
This store does the two things a callback's command needs — read a few
aggregates, save what changed — with psycopg's ``AsyncConnection``
(https://www.psycopg.org/psycopg3/docs/advanced/async.html) on the worker's
own loop, through the same SQL as the synchronous recorder
(``adapters.recorders``): the same stream query, the same insert function,
which takes its ids under the log's counter row, so ids still become visible
in commit order.

**Group commit among the loop's tasks.**  Saves that arrive while a commit is
under way wait; the commit task then inserts all of them in one statement —
one transaction, one fsync — and answers each only after that commit, so a
callback is still acknowledged only once its own events are durable.  A group
that conflicts (two saves of one aggregate version) is inserted again one by
one, so each save gets its own answer, as on the synchronous path.  The commit
runs in a task of its own: a request that stops waiting (its budget ran out)
does not stop the commit of the others.

**Outages.**  A connection the server hung up on is never handed out (the
pool's ``check`` reads the socket: ``adapters.pg_liveness``); a database that
does not answer fails the call at once with psycopg's ``OperationalError`` or
the pool's ``PoolTimeout`` — the same errors the API already answers with a
503 — and nothing is retried here: WeChat retries a callback answered FAIL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
import psycopg_pool
from eventsourcing.persistence import IntegrityError, Mapper, StoredEvent

from adapters import pg_liveness
from adapters.persistence import StoreUrl, connection_kwargs
from adapters.recorders import GROUP_MAX, LedgerPostgresRecorder, columns, decoded_streams, replay

POOL_SIZE = 4  # one commit at a time per worker, and the reads of the callbacks in flight beside it
WAIT_SECONDS = 2.0  # for a pooled connection (as the synchronous store's POSTGRES_CONNECT_TIMEOUT)
STUCK_SECONDS = 5.0  # a commit under way this long when the pools are refreshed is cut off (a frozen primary)


@dataclass
class _Save:
    events: list[StoredEvent]
    answer: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def settle(self, error: BaseException | None = None) -> None:
        if self.answer.done():  # its caller stopped waiting: the events are stored all the same
            return
        if error is None:
            self.answer.set_result(None)
        else:
            self.answer.set_exception(error)


class AsyncEventStore:
    """Reads and saves aggregates on the running event loop (``application.ledger.AsyncStore``)."""

    def __init__(self, store: StoreUrl, recorder: LedgerPostgresRecorder, mapper: Mapper[UUID]) -> None:
        self.store = store
        self.mapper = mapper
        self.select_sql = recorder.select_streams_sql
        self.insert_sql = recorder.insert_sql
        self.largest_group = 0  # the most saves one commit has served (a test can see grouping)
        self._pool: psycopg_pool.AsyncConnectionPool[Any] | None = None
        self._opening = asyncio.Lock()
        self._waiting: list[_Save] = []
        self._inflight: list[_Save] = []  # the group the committer is inserting now, and since when
        self._inflight_since = 0.0
        self._committer: asyncio.Task[None] | None = None

    async def load_many(self, aggregate_ids: Iterable[UUID]) -> dict[UUID, Any]:
        """Several aggregates in one query, replayed (absent ones left out)."""
        async with (await self._connections()).connection() as conn:
            cursor = await conn.execute(self.select_sql, (list(set(aggregate_ids)),), prepare=True, binary=True)
            rows = await cursor.fetchall()
        stored = (StoredEvent(originator_id=i, originator_version=v, topic=t, state=s) for i, v, t, s in rows)
        streams = decoded_streams(self.mapper, stored)
        return {aggregate_id: replay(None, events) for aggregate_id, events in streams.items()}

    async def save(self, *aggregates: Any) -> None:
        """Every new event of ``aggregates`` in one transaction (shared with the saves waiting beside it).

        Returns once they are durably stored; raises the library's ``IntegrityError`` when another command saved
        one of these versions first (the command is then run again on fresh state).
        """
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        if not events:
            return
        save = _Save([self.mapper.to_stored_event(event) for event in events])
        self._waiting.append(save)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(self._commit_waiting())
        await save.answer

    async def drain(self) -> None:
        """Every pooled connection replaced (after a failover: the old ones may lead to a deposed, frozen primary).

        A commit under way on such a connection for ``STUCK_SECONDS`` would hold
        every save behind it until that server wakes: its saves are answered "unavailable" now
        (never success: their outcome is unknown, and a retry is idempotent)
        and the saves behind it go on with a new committer.
        """
        stuck, committer = self._inflight, self._committer
        waited = time.monotonic() - self._inflight_since
        if committer is not None and not committer.done() and stuck and waited > STUCK_SECONDS:
            self._committer, self._inflight = None, []
            committer.cancel()
            committer.add_done_callback(lambda done: done.cancelled() or done.exception())
            for save in stuck:
                save.settle(psycopg.OperationalError("the commit was cut off by a failover; its outcome is unknown"))
            if self._waiting:
                self._committer = asyncio.get_running_loop().create_task(self._commit_waiting())
        if self._pool is not None:
            await self._pool.drain()

    async def close(self) -> None:
        """Finish the commit under way and close the pool; the next use (on another loop, say) opens a new one."""
        committer, pool = self._committer, self._pool
        self._committer, self._pool, self._opening = None, None, asyncio.Lock()
        if committer is not None:
            await asyncio.wait({committer}, timeout=WAIT_SECONDS)
        if pool is not None:
            await pool.close()

    async def _commit_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[:GROUP_MAX], self._waiting[GROUP_MAX:]
            self._inflight, self._inflight_since = group, time.monotonic()
            self.largest_group = max(self.largest_group, len(group))
            try:
                await self._insert([event for save in group for event in save.events])
            except IntegrityError as exc:
                if len(group) == 1:
                    group[0].settle(exc)
                    continue
                for save in group:  # alone, each gets its own answer
                    try:
                        await self._insert(save.events)
                    except Exception as own:  # noqa: BLE001 — handed to its caller, raised there
                        save.settle(own)
                    else:
                        save.settle()
            except Exception as exc:  # noqa: BLE001 — the database is down, say: nobody's events were stored
                for save in group:
                    save.settle(exc)
            else:
                for save in group:
                    save.settle()

    async def _insert(self, events: list[StoredEvent]) -> None:
        """One statement on an autocommit connection: the insert function locks, inserts and commits."""
        try:
            async with (await self._connections()).connection() as conn:
                await conn.execute(self.insert_sql, columns(events), prepare=True)
        except psycopg.errors.UniqueViolation as exc:
            raise IntegrityError(exc) from exc

    async def _connections(self) -> psycopg_pool.AsyncConnectionPool[Any]:
        """The pool, opened on first use on this loop (a worker's; the store is built before the loop runs)."""
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
                        kwargs=connection_kwargs(self.store, int(WAIT_SECONDS), autocommit=True),
                        min_size=1,
                        max_size=POOL_SIZE,
                        timeout=WAIT_SECONDS,
                        check=_checked,
                        open=False,
                        name="zhangben-async",
                    )
                    await pool.open(wait=False)
                    self._pool = pool
        return self._pool


async def _checked(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's ``check``: a connection the server hung up on (it restarted) is dropped, not handed out."""
    if pg_liveness.dropped(conn):
        raise pg_liveness.hung_up()
