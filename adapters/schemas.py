"""PostgreSQL schemas: each partition's tables in its own (``p000`` …), made by ``db init``.

A partition is a schema holding everything its merchants' money touches —
the event log with its counter, the projections' tables, scheduler and
webhook state — so that a transaction never spans two partitions and a
schema can later be moved whole to another database (docs/scale-out.md).  The
event store library takes the schema as a setting (``POSTGRES_SCHEMA``); the
read models find their tables through the connection's ``search_path``
(``persistence.connection_kwargs``).

A database written before partitions existed has its tables in ``public``:
``db init`` moves them into partition 0 in place — ``ALTER TABLE … SET SCHEMA``
keeps every row, index, sequence and id — so every event, position, feed id
and cursor stays valid (https://www.postgresql.org/docs/current/sql-altertable.html).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from adapters.persistence import StoreUrl, connect, partition_schema

LEGACY_SCHEMA = "public"
LEGACY_LOG = "ledger_events"  # the table whose presence in `public` marks a database of before partitions
INIT_LOCK = 0x7A68_616E_6762  # advisory lock: two `db init` at once take turns ("zhangb")


def prepare(store: StoreUrl) -> bool:
    """Make ``store``'s schema; move a database of before partitions into partition 0.  True if it moved."""
    if store.kind != "postgres" or not store.schema:
        return False
    with connect(store.in_schema(""), 5) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INIT_LOCK,))
        conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(store.schema)))
        if store.schema == partition_schema(0) and _legacy(conn, store.schema):
            _move_public_into(conn, store.schema)
            return True
    return False


def _legacy(conn: psycopg.Connection[Any], schema: str) -> bool:
    """``public`` holds a ledger and the partition does not yet."""
    old, new = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
        (f"{LEGACY_SCHEMA}.{LEGACY_LOG}", f"{schema}.{LEGACY_LOG}"),
    ).fetchone() or (False, False)
    return bool(old) and not new


# What moves, in this order: tables (with their indexes, constraints, owned sequences and row types), the
# sequences no table owns, then free-standing composite types (the library's stored event row)
MOVES = (
    (["r", "p"], SQL("ALTER TABLE {} SET SCHEMA {}")),
    (["S"], SQL("ALTER SEQUENCE {} SET SCHEMA {}")),
    (["c"], SQL("ALTER TYPE {} SET SCHEMA {}")),
)


def _move_public_into(conn: psycopg.Connection[Any], schema: str) -> None:
    """Every table, sequence and composite type of ``public`` into ``schema``; the ledger's functions dropped.

    The functions are the ledger's insert function (and the library's own,
    unused), made again in the new schema by the library's table creation
    right after.
    """
    for kinds, statement in MOVES:
        names = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind::text = ANY(%s)",
            (LEGACY_SCHEMA, kinds),
        ).fetchall()
        for (name,) in names:
            conn.execute(statement.format(Identifier(LEGACY_SCHEMA, name), Identifier(schema)))
    conn.execute(
        "DO $$ DECLARE f regprocedure; BEGIN FOR f IN "
        "SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'public' AND (p.proname LIKE 'ledger_events%' OR p.proname LIKE 'es_insert_events%') "
        "LOOP EXECUTE 'DROP FUNCTION ' || f; END LOOP; END $$"
    )
