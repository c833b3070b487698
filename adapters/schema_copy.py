"""One partition's schema copied to another PostgreSQL cell while it takes writes, then frozen and handed over.

PostgreSQL's own logical replication does the copying
(https://www.postgresql.org/docs/15/logical-replication.html): a
publication of the schema's tables on the source cell, a replication slot
made beforehand (a subscription in the same cluster cannot make its own:
https://www.postgresql.org/docs/15/sql-createsubscription.html, notes), and
a subscription on the target that copies the rows and then streams every
later change.  The target's tables are made by the ledger's own ``db init``
code, so both sides have the same DDL.

The hand-over is exact, not timed: one transaction on the source locks
every table of the schema (waiting out writes under way), reads the
sequences, writes a marker row and puts a trigger on every table that
refuses any later write (``55000``, which every process answers as a 503).
Logical replication applies transactions in commit order, so once the
marker is on the target, every write ever committed on the source is too.
Sequences are not replicated (PostgreSQL 15): their values are set on the
target from what the freeze read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from adapters.persistence import StoreUrl, connect, libpq_params

MARKS = "zb_move_marks"  # the freeze's marker: seen on the target, everything before it is there too
REFUSED = "55000"  # object_not_in_prerequisite_state: psycopg's OperationalError, a 503 to every caller
CONNECT_SECONDS = 5
POLL_SECONDS = 0.1


class CopyError(Exception):
    """The copy cannot go on; the message says why and never holds a password."""


@contextmanager
def _session(store: StoreUrl) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with connect(store, CONNECT_SECONDS, autocommit=True) as conn:
        yield conn


def _tables(conn: psycopg.Connection[tuple[Any, ...]], schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname",
        (schema,),
    ).fetchall()
    return [str(r[0]) for r in rows]


class SchemaCopy:
    """The copy of ``schema`` from ``source`` to ``target`` (stores of the two cells, in that schema)."""

    def __init__(self, source: StoreUrl, target: StoreUrl, schema: str, move: str) -> None:
        if (source.host, source.port, source.dbname) == (target.host, target.port, target.dbname):
            raise CopyError("the source and the target are the same database: nothing to move")
        self.source, self.target, self.schema, self.move = source, target, schema, move
        self.name = f"zb_move_{schema}"  # publication, slot and subscription

    def _q(self, table: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(table))

    def check_source(self) -> None:
        """Logical replication needs ``wal_level = logical`` on the source (a restart to change)."""
        with _session(self.source) as conn:
            level = conn.execute("SHOW wal_level").fetchone()
            if not level or level[0] != "logical":
                raise CopyError(
                    f"the source cell's PostgreSQL has wal_level = {level[0] if level else '?'}; moving a partition "
                    "needs wal_level = logical (a restart; docs/scale-out.md)"
                )

    def prepare_target(self) -> None:
        """The target's tables (already made by ``db init``'s code) emptied, and the same set as the source's."""
        with _session(self.source) as conn:
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (move TEXT PRIMARY KEY)").format(self._q(MARKS)))
            wanted = _tables(conn, self.schema)
        with _session(self.target) as conn:
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (move TEXT PRIMARY KEY)").format(self._q(MARKS)))
            there = _tables(conn, self.schema)
            if set(wanted) - set(there):
                raise CopyError(
                    f"the target lacks tables {sorted(set(wanted) - set(there))} of {self.schema}: run the same "
                    "zhangben version's `db init` first"
                )
            conn.execute(
                sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(self._q(t) for t in wanted))
            )  # a copy left by a move given up, or the rows `db init` seeds: the subscription copies all

    def publish(self) -> None:
        """The source's publication of every table (those without a key replicate updates by whole row) and its
        replication slot."""
        with _session(self.source) as conn:
            tables = _tables(conn, self.schema)
            keyless = conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
                "AND c.relkind = 'r' AND c.relreplident = 'd' AND NOT EXISTS "
                "(SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)",
                (self.schema,),
            ).fetchall()
            for (table,) in keyless:
                conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(self._q(str(table))))
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(self.name), sql.SQL(", ").join(self._q(t) for t in tables)
                )
            )
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (self.name,))

    def subscribe(self) -> None:
        """The target's subscription: it copies every row, then applies each later commit (``synchronous_commit =
        on``: what it applies is on the target's synchronous standby before it is visible)."""
        with _session(self.target) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (create_slot = false, slot_name = {}, "
                    "copy_data = true, synchronous_commit = 'on', streaming = off)"
                ).format(
                    sql.Identifier(self.name),
                    sql.Literal(self._source_conninfo()),
                    sql.Identifier(self.name),
                    sql.Literal(self.name),
                )
            )

    def _source_conninfo(self) -> str:
        s = self.source
        params = {k: v for k, v in libpq_params(s).items() if k != "options"}
        return make_conninfo(
            "", host=s.host, port=s.port, dbname=s.dbname, user=s.user, password=s.password or None, **params
        )

    def wait_copied(self, timeout: float) -> None:
        """Every table's first copy done (``pg_subscription_rel`` ready)."""
        deadline = time.monotonic() + timeout
        with _session(self.target) as conn:
            while True:
                left = conn.execute(
                    "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
                    "WHERE s.subname = %s AND r.srsubstate <> 'r'",
                    (self.name,),
                ).fetchone()
                if left and left[0] == 0:
                    return
                if time.monotonic() > deadline:
                    raise CopyError(f"the first copy of {self.schema} did not finish in {timeout:.0f} s")
                time.sleep(POLL_SECONDS * 5)

    def freeze(self, lock_timeout_ms: int = 10_000) -> dict[str, tuple[int, bool]]:
        """The source takes no more writes to the schema, for good; returns its sequences' states.

        Locks every table (writes under way finish first; reads go on), reads
        the sequences, writes the marker and leaves a trigger on each table
        that refuses every later write, all in one transaction.
        """
        with _session(self.source) as conn, conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
            tables = [t for t in _tables(conn, self.schema) if t != MARKS]
            conn.execute(
                sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.SQL(", ").join(self._q(t) for t in tables))
            )
            sequences = {}
            for (name,) in conn.execute(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = %s", (self.schema,)
            ).fetchall():
                row = conn.execute(
                    sql.SQL("SELECT last_value, is_called FROM {}").format(self._q(str(name)))
                ).fetchone()
                if row:
                    sequences[str(name)] = (int(row[0]), bool(row[1]))
            refuse = sql.Identifier(self.schema, "zb_moved")
            conn.execute(
                sql.SQL(
                    "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION USING ERRCODE = {}, MESSAGE = {}; END $$"
                ).format(
                    refuse,
                    sql.Literal(REFUSED),
                    sql.Literal(f"partition schema {self.schema} has moved to another cell (move {self.move})"),
                )
            )
            for table in tables:
                conn.execute(
                    sql.SQL(
                        "CREATE TRIGGER zb_moved BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {} "
                        "FOR EACH STATEMENT EXECUTE FUNCTION {}()"
                    ).format(self._q(table), refuse)
                )
            conn.execute(sql.SQL("INSERT INTO {} (move) VALUES (%s)").format(self._q(MARKS)), (self.move,))
        return sequences

    def wait_caught_up(self, timeout: float) -> float:
        """Seconds until the marker was on the target: every write of the source is there too."""
        started = time.monotonic()
        with _session(self.target) as conn:
            while True:
                found = conn.execute(
                    sql.SQL("SELECT 1 FROM {} WHERE move = %s").format(self._q(MARKS)), (self.move,)
                ).fetchone()
                if found:
                    return time.monotonic() - started
                if time.monotonic() - started > timeout:
                    raise CopyError(f"the target did not catch up with {self.schema} in {timeout:.0f} s")
                time.sleep(POLL_SECONDS)

    def hand_over(self, sequences: dict[str, tuple[int, bool]]) -> None:
        """The target's sequences set, the subscription, slot and publication gone: the target stands alone."""
        with _session(self.target) as conn:
            for name, (value, called) in sequences.items():
                conn.execute("SELECT setval(%s, %s, %s)", (f"{self.schema}.{name}", value, called))
            self._unsubscribe(conn)
        self._unpublish()

    def _unsubscribe(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        exists = conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", (self.name,)).fetchone()
        if exists:  # its slot is the source's to drop (below): detached first, so the drop does not wait on it
            name = sql.Identifier(self.name)
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(name))
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(name))
            conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(name))

    def _unpublish(self) -> None:
        with _session(self.source) as conn:
            deadline = time.monotonic() + 10
            while conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.name,)).fetchone():
                try:  # the walsender lets go of it within moments of the subscription's end
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (self.name,))
                except psycopg.errors.ObjectInUse:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(POLL_SECONDS)
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(self.name)))

    def drop_source(self) -> None:
        """The old copy gone (after every process follows the map to the target)."""
        with _session(self.source) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))

    def abandon(self) -> None:
        """A move given up: the target's subscription and copy gone, the source as it was (writes taken again)."""
        with _session(self.target) as conn:
            self._unsubscribe(conn)
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
        self._unpublish()
        with _session(self.source) as conn:
            for table in _tables(conn, self.schema):
                conn.execute(sql.SQL("DROP TRIGGER IF EXISTS zb_moved ON {}").format(self._q(table)))
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(self.schema, "zb_moved")))
