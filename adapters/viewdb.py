"""The database the read models live in: the event store's own (SQLite file or PostgreSQL).

A thin layer so each projection writes one SQL dialect: ``?`` placeholders,
``ON CONFLICT … DO UPDATE``; PostgreSQL gets ``%s`` instead.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from adapters.persistence import StoreUrl, connect
from adapters.pg_liveness import dropped


class ViewDatabase:
    """One connection, shared by a process's threads under a lock.

    A PostgreSQL connection that broke (the server restarted, the network
    blinked) fails the statement it was running — that call is a 503 — and is
    replaced by a new one at the next call, so every long-lived user (the
    projections, the scheduler's leases, the webhook worker, ``/readyz``)
    recovers by itself once the database is back.
    """

    def __init__(self, store: StoreUrl) -> None:
        self.kind = store.kind
        self._store = store
        self._lock = threading.RLock()
        self._depth = 0  # inside transaction(): statements stay on the transaction's connection
        if store.kind == "postgres":
            self._pg = self._connect()
        else:
            path = ":memory:" if store.kind == "memory" else store.path
            self._sqlite = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            if path != ":memory:":
                self._sqlite.execute("PRAGMA journal_mode=WAL")

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return connect(self._store, 5, autocommit=True)

    def _live(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The connection, replaced first if it broke (never mid-transaction: a transaction fails whole).

        A server that restarted while the connection sat idle has closed the
        socket, but the client learns it only when a statement fails; an idle
        socket with something to read (the server's goodbye) is checked first,
        so the first statement after an outage does not fail for nothing.
        """
        if self._depth == 0 and (self._pg.closed or self._pg.broken or dropped(self._pg)):
            try:
                self._pg.close()
            finally:
                self._pg = self._connect()
        return self._pg

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.kind == "postgres" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self.kind == "postgres":
                cursor = self._live().execute(self._sql(sql), params)
                return cursor.fetchall() if cursor.description else []
            return self._sqlite.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._lock:
            if self.kind == "postgres":
                with self._live().cursor() as cursor:
                    cursor.executemany(self._sql(sql), rows)
            else:
                self._sqlite.executemany(sql, rows)

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """Bulk-load ``rows``, streaming: ``COPY … FROM STDIN`` on PostgreSQL, batched inserts on SQLite.

        Inside ``transaction()`` the rows are part of it.  Returns how many were written.
        """
        written = 0
        with self._lock:
            if self.kind == "postgres":
                statement = SQL("COPY {} ({}) FROM STDIN").format(
                    Identifier(table), SQL(", ").join(map(Identifier, columns))
                )
                with self._live().cursor() as cursor, cursor.copy(statement) as copy:
                    for row in rows:
                        copy.write_row(row)
                        written += 1
                return written
            insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"  # noqa: S608 — the caller's own table
            for batch in _batched(rows):
                self._sqlite.executemany(insert, batch)
                written += len(batch)
            return written

    def analyze(self, table: str) -> None:
        """Refresh the planner's statistics after a bulk load (what a join over it is planned on)."""
        with self._lock:
            if self.kind == "postgres":
                self._live().execute(SQL("ANALYZE {}").format(Identifier(table)))
            else:
                self._sqlite.execute(f"ANALYZE {table}")

    def columns(self, table: str) -> set[str]:
        """The table's column names (to add one an upgrade brings: ``CREATE TABLE IF NOT EXISTS`` does not)."""
        if self.kind == "postgres":
            rows = self.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = "
                "current_schema()",
                (table,),
            )
        else:
            rows = [(r[1],) for r in self.execute(f"PRAGMA table_info({table})")]
        return {str(r[0]) for r in rows}

    def add_column(self, table: str, column: str, definition: str) -> bool:
        """Add a column an upgrade brings (``CREATE TABLE IF NOT EXISTS`` does not); True if it was missing."""
        if column in self.columns(table):
            return False
        self.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        return True

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._lock:
            if self.kind == "postgres":
                return self._live().execute(self._sql(sql), params).rowcount
            return self._sqlite.execute(sql, params).rowcount

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self.kind == "postgres":
                with self._live().transaction():
                    self._depth += 1
                    try:
                        yield
                    finally:
                        self._depth -= 1
                return
            self._sqlite.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._sqlite.execute("ROLLBACK")
                raise
            self._sqlite.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self.kind == "postgres":
                self._pg.close()
            else:
                self._sqlite.close()


COPY_BATCH = 5000


def _batched(rows: Iterable[Sequence[Any]]) -> Iterator[list[Sequence[Any]]]:
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= COPY_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def sortable(moment: datetime) -> str:
    """UTC with fixed width, so text order is time order (times in view tables are this text)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
