"""The event store's recorders, subclassed through the library's own setting (``APPLICATION_RECORDER_TOPIC``).

What the library's recorders do not do and the hot path needs (docs/performance.md, measured with ``make bench``):

- **Group commit** (PostgreSQL): inserts from threads that arrive while a
  commit is under way share one transaction, each caller answered only after
  that commit, each alone again if the group conflicts.
- **One statement per insert, ordered by a counter row, not a table lock**
  (PostgreSQL): a function made by ``db init`` takes the next ids from the
  log's one-row counter (``UPDATE … RETURNING``) and inserts; on an autocommit
  connection the statement's transaction holds the row's lock until it
  commits.  No pipeline, no ``NOTIFY`` (nothing LISTENs: the projections poll
  the log).
- **Several streams in one query** (``select_streams``, ``existing``): a
  command that needs a payment and a transaction index, or a projection batch
  that touches two hundred orders, reads them in one round trip.
- **No dead connection handed out**: the pool checks each checkout's socket
  (``adapters/pg_liveness.py``), so after a server restart no request fails
  on a connection that died with it.
- **Statements rendered once**: the library composes its ``SELECT`` from
  ``psycopg.sql`` pieces on every call.

The ordering guarantee followers rely on is the one the library's
``LOCK TABLE … IN EXCLUSIVE MODE`` gives, kept by a narrower lock: each insert
transaction locks the counter row before it takes ids and holds it to its
commit, so ids become visible in the order they were issued and a follower
never passes over an id that a slower transaction fills in later
(``tests/integration/test_followers_pg.py`` hammers this, with a negative
control).  The counter is the log's own (one per schema), so logs in other
schemas — other partitions — never wait for it, where the table lock of a
distributed engine would be taken on every node.  The library is
pinned (``pyproject.toml``) because these classes override its recorders'
protected methods.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    InterfaceError,
    Mapper,
    Notification,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

from adapters import pg_liveness

GROUP_MAX = 64  # callers per group commit
SQLITE_CHUNK = 500  # SQLite's limit on bound parameters is 999 in old builds; stay well below it

# The log's one insert path.  The counter row's lock is taken first and held to the commit, so transactions
# take their ids in the order they commit and a follower never passes an id a slower transaction fills in
# later; inserts into another log (another partition's schema) take another row and never wait for these.
INSERT_FUNCTION = (
    "CREATE OR REPLACE FUNCTION {schema}.{function}(events {schema}.{event}[]) RETURNS SETOF bigint "
    "LANGUAGE plpgsql AS $BODY$ DECLARE head bigint; BEGIN "
    "SET LOCAL lock_timeout = '{lock_timeout}s'; "
    "UPDATE {schema}.{counter} SET last_id = last_id + cardinality(events) RETURNING last_id INTO head; "
    "RETURN QUERY INSERT INTO {schema}.{table} (notification_id, originator_id, originator_version, topic, state) "
    "SELECT head - cardinality(events) + n, originator_id, originator_version, topic, state "
    "FROM unnest(events) WITH ORDINALITY AS u(originator_id, originator_version, topic, state, n) ORDER BY n "
    "RETURNING notification_id; "
    "END; $BODY$"
)


class _Waiting:
    """One caller's events waiting to be committed with others' (group commit)."""

    __slots__ = ("error", "events", "ids", "promoted", "settled")

    def __init__(self, events: Sequence[StoredEvent]) -> None:
        self.events = events
        self.ids: Sequence[int] | None = None
        self.error: BaseException | None = None
        self.promoted = False  # woken to lead the next group rather than because its events were committed
        self.settled = threading.Event()

    def result(self) -> Sequence[int] | None:
        """The caller's notification ids, or the caller's error raised in the caller's thread."""
        if self.error is not None:
            raise self.error
        return self.ids


class LedgerPostgresFactory(PostgresFactory):
    """The library's factory, its pool's connections given ``persistence.libpq_params`` before the first opens.

    The library passes libpq only an address; a cell's URL names every node
    and wants the one that takes writes, and every connection wants
    keepalives and a bound on unacknowledged data (docs/scale-out.md).
    """

    POSTGRES_LIBPQ_PARAMS = "POSTGRES_LIBPQ_PARAMS"

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        params = json.loads(self.env.get(self.POSTGRES_LIBPQ_PARAMS) or "{}")
        kwargs = cast(dict[str, Any], self.datastore.pool.kwargs)
        kwargs.update(params)


class LedgerPostgresRecorder(PostgresApplicationRecorder):
    """PostgreSQL: group commit, statements rendered once, several streams per query, no ``NOTIFY``."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        pg_liveness.guard(datastore.pool)  # a connection that died with a restarted server is never handed out
        # One statement per insert: a function that takes the log's next ids from its counter row and inserts
        # (made by `db init`, below)
        names = {
            "schema": Identifier(datastore.schema),
            "table": Identifier(events_table_name),
            "counter": Identifier(f"{events_table_name}_head"),
            "function": Identifier(f"{events_table_name}_insert_ordered"),
            "event": Identifier(self.stored_event_type_name),
        }
        self.sql_create_statements += [
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{counter} ("
                "one boolean PRIMARY KEY DEFAULT true CHECK (one), last_id bigint NOT NULL)"
            ).format(**names),
            # a log written before the counter existed (ids from the table's sequence) goes on after its last id
            SQL(
                "INSERT INTO {schema}.{counter} (last_id) "
                "SELECT COALESCE(MAX(notification_id), 0) FROM {schema}.{table} ON CONFLICT DO NOTHING"
            ).format(**names),
            SQL("DROP FUNCTION IF EXISTS {schema}.{old}").format(
                schema=names["schema"], old=Identifier(f"{events_table_name}_insert_locked")
            ),
            SQL(INSERT_FUNCTION).format(lock_timeout=datastore.lock_timeout, **names),
        ]
        # the rows go as four plain arrays in binary, made into the function's composite array by the server:
        # psycopg dumps those several times faster than a list of composite values in text (the hot path)
        self.insert_sql = (
            SQL(
                "SELECT notification_id FROM {schema}.{function}(ARRAY("
                "SELECT ROW(i, v, t, s)::{schema}.{event} "
                "FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[]) WITH ORDINALITY AS u(i, v, t, s, n) "
                "ORDER BY n)) AS notification_id"
            )
            .format(**names, id_type=Identifier(datastore.originator_id_type))
            .as_string(None)
        )
        self._group_lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._leading = False
        self.largest_group = 0  # the most callers one commit has served (a test and an operator can see grouping)
        table = {"schema": Identifier(datastore.schema), "table": Identifier(events_table_name)}
        select = "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} WHERE originator_id"
        self._select_stream = SQL(select + " = %s ORDER BY originator_version").format(**table).as_string(None)
        self._select_existing = (
            SQL("SELECT originator_id FROM {schema}.{table} WHERE originator_id = ANY(%s) AND originator_version = 1")
            .format(**table)
            .as_string(None)
        )
        self.select_streams_sql = (
            SQL(select + " = ANY(%s) ORDER BY originator_id, originator_version").format(**table).as_string(None)
        )

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Group commit: the inserts of threads that arrive while a commit is under way go in one transaction.

        The first caller leads: it commits what is waiting (itself included) in
        one transaction — one turn of the counter, one ``COMMIT``, one fsync — and wakes
        each caller only after that commit, so nobody hears "stored" before its
        own events are durable.  If the group's insert hits a conflict (two
        callers wrote the same aggregate version), each caller's events are
        inserted again alone, so each gets its own success or its own
        ``IntegrityError`` exactly as without grouping.  A caller alone pays
        nothing extra: there is no waiting window.
        """
        if any(value is not None for value in kwargs.values()):  # `tracking=None` always comes
            # the library's insert takes ids from the table's sequence, behind the counter: never mixed in
            raise NotImplementedError("the ledger's log takes no tracking records")
        if not stored_events:
            return []
        mine = _Waiting(stored_events)
        with self._group_lock:
            self._waiting.append(mine)
            lead = not self._leading
            self._leading = True
        if not lead:
            mine.settled.wait()
            if not mine.promoted:
                return mine.result()
        with self._group_lock:
            group, self._waiting = self._waiting[:GROUP_MAX], self._waiting[GROUP_MAX:]
        try:
            self._commit(group)
        finally:
            with self._group_lock:
                if self._waiting:  # hand over: the next waiting caller leads the next group
                    self._waiting[0].promoted = True
                    self._waiting[0].settled.set()
                else:
                    self._leading = False
        return mine.result()

    def _commit(self, group: list[_Waiting]) -> None:
        self.largest_group = max(self.largest_group, len(group))
        try:
            ids = self._insert([event for waiting in group for event in waiting.events])
            offset = 0
            for waiting in group:
                waiting.ids = None if ids is None else ids[offset : offset + len(waiting.events)]
                offset += len(waiting.events)
        except IntegrityError as exc:
            if len(group) == 1:
                group[0].error = exc
            else:
                for waiting in group:  # alone, each gets its own answer
                    try:
                        waiting.ids = self._insert(waiting.events)
                    except Exception as own:  # noqa: BLE001 — handed to its caller, raised there
                        waiting.error = own
        except BaseException as exc:  # noqa: BLE001 — the database is down, say: nobody's events were stored; each caller raises it
            for waiting in group:
                waiting.error = exc
        finally:
            for waiting in group:
                waiting.promoted = False
                waiting.settled.set()

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _insert(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        """One statement on an autocommit connection: take ids, insert and commit in one round trip.

        The function locks the log's counter row as it takes the ids, and the
        statement's own transaction holds it until it commits — the same
        insert-order-equals-commit-order guarantee as the library's ``LOCK`` +
        ``INSERT`` + ``COMMIT``, without the three round trips, the pipeline's
        bookkeeping, or a lock on the whole table.  (The library's own
        function, used with ``POSTGRES_ENABLE_DB_FUNCTIONS``, takes ids from
        the sequence without any lock and lets followers skip events:
        docs/performance.md.)
        """
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.insert_sql, columns(stored_events), prepare=True)
            return [int(row["notification_id"]) for row in curs.fetchall()]

    def _notify_channel(self, curs: Any) -> None:
        """Nothing LISTENs on the channel: the projections poll the log (``projections.core``)."""

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        if gt is not None or lte is not None or desc or limit is not None:
            return cast(
                Sequence[StoredEvent],
                super().select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit),
            )
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_stream, (originator_id,), prepare=True)
            return [_stored(row) for row in curs.fetchall()]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_streams(self, originator_ids: Collection[UUID]) -> list[StoredEvent]:
        """Every event of every aggregate in ``originator_ids``, by aggregate then version, in one query."""
        if not originator_ids:
            return []
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_streams_sql, (list(originator_ids),), prepare=True)
            return [_stored(row) for row in curs.fetchall()]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def existing(self, originator_ids: Collection[UUID]) -> set[UUID]:
        """Which of ``originator_ids`` exist (have a first event), in one query."""
        if not originator_ids:
            return set()
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_existing, (list(originator_ids),), prepare=True)
            return {row["originator_id"] for row in curs.fetchall()}


class LedgerSQLiteRecorder(SQLiteApplicationRecorder):
    """SQLite: several streams per query (in chunks of bound parameters)."""

    def existing(self, originator_ids: Collection[UUID]) -> set[UUID]:
        rows = self._rows_of("originator_id", originator_ids, "AND originator_version = 1")
        return {UUID(str(self.convert_originator_id(row["originator_id"]))) for row in rows}

    def select_streams(self, originator_ids: Collection[UUID]) -> list[StoredEvent]:
        rows = self._rows_of(
            "originator_id, originator_version, topic, state",
            originator_ids,
            "ORDER BY originator_id, originator_version",
        )
        return [
            StoredEvent(
                originator_id=self.convert_originator_id(row["originator_id"]),
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=row["state"],
            )
            for row in rows
        ]

    def _rows_of(self, columns: str, originator_ids: Collection[UUID], tail: str) -> list[Any]:
        """``SELECT columns … WHERE originator_id IN (…) tail``, in chunks of bound parameters, one read transaction."""
        ids = [i.hex for i in originator_ids]
        rows: list[Any] = []
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(ids), SQLITE_CHUNK):
                chunk = ids[start : start + SQLITE_CHUNK]
                c.execute(
                    f"SELECT {columns} FROM {self.events_table_name} "  # noqa: S608 — the library's table, our columns
                    f"WHERE originator_id IN ({', '.join('?' for _ in chunk)}) {tail}",
                    chunk,
                )
                rows += c.fetchall()
        return rows


def select_streams(recorder: ApplicationRecorder, originator_ids: Collection[UUID]) -> list[StoredEvent]:
    """Several aggregates' events in one round trip where the recorder can, else one query each (in memory)."""
    if isinstance(recorder, LedgerPostgresRecorder | LedgerSQLiteRecorder):
        return recorder.select_streams(originator_ids)
    return [event for originator_id in originator_ids for event in recorder.select_events(originator_id)]


def existing(recorder: ApplicationRecorder, originator_ids: Collection[UUID]) -> set[UUID]:
    """Which aggregates exist, in one query where the recorder can."""
    if isinstance(recorder, LedgerPostgresRecorder | LedgerSQLiteRecorder):
        return recorder.existing(originator_ids)
    return {i for i in originator_ids if recorder.select_events(i, limit=1)}


# Several aggregates' events by id, read together (``read_streams``, or a projection's shared reader).
Streams = Callable[[Iterable[UUID]], dict[UUID, list[DomainEvent]]]


def read_streams(
    recorder: ApplicationRecorder, mapper: Mapper[UUID], originator_ids: Iterable[UUID]
) -> dict[UUID, list[DomainEvent]]:
    """Several aggregates' events, decoded and grouped by aggregate (absent ones left out), in one query."""
    return decoded_streams(mapper, select_streams(recorder, set(originator_ids)))


def decoded_streams(mapper: Mapper[UUID], stored_events: Iterable[StoredEvent]) -> dict[UUID, list[DomainEvent]]:
    """Stored events (by aggregate, then version) decoded and grouped by aggregate."""
    streams: dict[UUID, list[DomainEvent]] = {}
    for stored in stored_events:
        event = cast(DomainEvent, mapper.to_domain_event(stored))
        streams.setdefault(event.originator_id, []).append(event)
    return streams


def replay(aggregate: Any, events: Iterable[Any]) -> Any:
    """The library's ``project_aggregate`` without its per-event ``isinstance`` against a runtime Protocol.

    That check is an ``assert`` costing more than the mutation itself (a
    runtime-checkable Protocol inspects every attribute on Python 3.11); every
    event here is the library's own ``DomainEvent``, which can mutate.
    """
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def columns(stored_events: Sequence[StoredEvent]) -> tuple[list[Any], list[int], list[str], list[bytes]]:
    """The insert function's four arrays: ids, versions, topics, states (``LedgerPostgresRecorder.insert_sql``)."""
    return (
        [e.originator_id for e in stored_events],
        [e.originator_version for e in stored_events],
        [e.topic for e in stored_events],
        [e.state for e in stored_events],
    )


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )


def notifications_once(
    recorder: ApplicationRecorder, start: int, limit: int, topics: Sequence[str] = ()
) -> list[Notification]:
    """``select_notifications`` without the library's retries (ten, over two seconds, on a connection error): a
    poller that asks again in a moment fails at once instead, and presses no cell in failover with reconnections."""
    method = type(recorder).select_notifications
    plain = getattr(method, "__wrapped__", method)
    return list(plain(recorder, start, limit, topics=topics))
