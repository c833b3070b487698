"""Opening the ledger on a database URL: the one piece of wiring the short commands need.

Kept apart from ``bootstrap.wiring`` so that ``zhangben history`` or
``zhangben apikey create`` do not load the WeChat Pay client and the projections.
"""

from __future__ import annotations

from adapters import persistence, schemas
from application.ledger import Clock, Ledger
from bootstrap.clock import system_clock


def open_ledger(
    database_url: str = persistence.DEFAULT_DATABASE_URL,
    *,
    create_tables: bool = False,
    clock: Clock = system_clock,
) -> Ledger:
    """Open the ledger on ``database_url`` (partition 0's), failing in one clear line if it cannot."""
    return open_store(persistence.parse_url(database_url), create_tables=create_tables, clock=clock)


def open_directory(
    database_url: str = persistence.DEFAULT_DATABASE_URL,
    *,
    create_tables: bool = False,
    clock: Clock = system_clock,
) -> Ledger:
    """The directory's own event log (API keys): the ``directory`` schema; on SQLite, the one file's log."""
    store = persistence.parse_url(database_url).in_schema(persistence.DIRECTORY_SCHEMA)
    return open_store(store, create_tables=create_tables, clock=clock)


def open_store(
    store: persistence.StoreUrl,
    *,
    create_tables: bool = False,
    clock: Clock = system_clock,
    pool_size: int = persistence.POOL_SIZE,
    reachable: bool = False,
) -> Ledger:
    """Open the ledger on ``store`` (one partition's schema), failing in one clear line if it cannot
    (``reachable``: the caller has just checked that the server answers, for the partitions' ledgers)."""
    if not reachable:
        persistence.check_reachable(store, create=create_tables)
    if create_tables:
        schemas.prepare(store)  # its schema made; a database of before partitions moved into partition 0
    env = persistence.event_store_env(store, create_tables=create_tables, pool_size=pool_size)
    ledger = Ledger(env=env, clock=clock)
    try:
        ledger.recorder.max_notification_id()
    except Exception as exc:  # noqa: BLE001 — the library wraps every driver error in its own types
        ledger.close()
        if _is_missing_table(exc):
            raise persistence.DatabaseNotInitialised(
                f"database {store} has no ledger tables: run `zhangben db init` first"
            ) from None
        raise persistence.DatabaseUnavailable(f"cannot use database {store}: {exc}") from None
    return ledger


def _is_missing_table(exc: Exception) -> bool:
    text = str(exc).lower()
    return "no such table" in text or "does not exist" in text
