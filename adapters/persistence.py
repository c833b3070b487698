"""``ZHANGBEN_DATABASE_URL`` → the ``eventsourcing`` library's settings.

One URL configures the store.  What we always set, and why
(see ``shared/eventsourcing-notes.md``):

- ``POSTGRES_LOCK_TIMEOUT``: the library's default waits forever for the
  events table's EXCLUSIVE lock; one stuck writer would stall every writer.
- ``POSTGRES_ENABLE_DB_FUNCTIONS=n``: the plpgsql insert path skips that
  lock and readers tailing the log then miss events.
- ``CREATE_TABLE``: only ``zhangben db init`` creates tables; workers start
  with ``n`` because concurrent DDL at start-up crashes
  (``tuple concurrently updated``).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
import psycopg_pool
from eventsourcing import persistence as es

DEFAULT_DATABASE_URL = "sqlite:///var/zhangben.db"
ENV_PREFIX = "LEDGER_"  # the Application's name, upper-cased: prefixed keys win


class PersistenceError(Exception):
    """A store that cannot be used; the message is safe to show (no password)."""


class DatabaseUrlError(PersistenceError):
    pass


class DatabaseUnavailable(PersistenceError):
    pass


class PartitionFrozen(DatabaseUnavailable):
    """A partition frozen for a move (``zhangben partitions move``): its database is fine, a 503 to retry."""


# The database cannot be used right now (down, restarting, unreachable, locked, read-only, full), whatever
# raised it — psycopg, its pool, the event store library (which wraps driver errors in its own PEP 249 types),
# sqlite3: the client gets the same answer, a 503 to retry, never a 500.
UNAVAILABLE: tuple[type[Exception], ...] = (
    DatabaseUnavailable,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
    es.OperationalError,
    es.InterfaceError,
    sqlite3.OperationalError,
)


def is_unavailable(exc: BaseException) -> bool:
    """One of ``UNAVAILABLE``: the database, not the request, is the problem."""
    return isinstance(exc, UNAVAILABLE)


class DatabaseNotInitialised(PersistenceError):
    pass


@dataclass(frozen=True)
class StoreUrl:
    """A parsed database URL; ``str()`` never shows the password."""

    kind: str  # "sqlite" | "postgres" | "memory"
    raw: str
    path: str = ""
    # PostgreSQL: libpq's lists — one host and port, or every node of a cell ("h1,h2,h3", "5432,5432,5432"):
    # libpq tries them in turn and keeps the one that takes writes (``target_session_attrs``)
    host: str = ""
    port: str = "5432"
    user: str = ""
    password: str = ""
    dbname: str = ""
    # PostgreSQL: the schema the ledger's tables are in (a partition's `pNNN`, or `directory`); its connections
    # see it first on their search_path.  A URL alone names partition 0 (docs/scale-out.md).
    schema: str = ""
    # libpq parameters from the URL's query (``target_session_attrs``, ``sslmode`` …), over ``RESILIENCE``
    params: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return redact(self.raw)

    def in_schema(self, schema: str) -> StoreUrl:
        """The same database, another schema (PostgreSQL; SQLite and memory have one of everything)."""
        return replace(self, schema=schema) if self.kind == "postgres" else self


def partition_schema(partition: int) -> str:
    """Partition ``partition``'s schema: ``p000`` … ``p999``."""
    return f"p{partition:03d}"


DIRECTORY_SCHEMA = "directory"  # what is not one merchant's money: merchants' partitions, the partition map


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``; one too malformed to parse keeps only its scheme."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        return f"{scheme}://***" if scheme.isalnum() else "***"
    if password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return parts._replace(netloc=f"{userinfo}:***@{netloc[1]}").geturl()


def parse_url(url: str) -> StoreUrl:
    """Parse a database URL, or raise ``DatabaseUrlError`` naming it (redacted)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise DatabaseUrlError(f"malformed database URL {redact(url)!r}: {exc}") from None
    if parts.scheme == "memory":
        return StoreUrl(kind="memory", raw=url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path.startswith("/") or path == "/":
            raise DatabaseUrlError(
                f"malformed SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return StoreUrl(kind="sqlite", raw=url, path=path[1:])
    if parts.scheme in ("postgresql", "postgres"):
        return _parse_postgres(url, parts.netloc, parts.path, parts.query)
    raise DatabaseUrlError(
        f"unsupported database URL {redact(url)!r}: use sqlite:///path or postgresql://user:pass@host/db"
    )


# What every PostgreSQL connection carries unless its URL says otherwise, so that a primary that dies,
# freezes or is cut off never hangs a pool (docs/scale-out.md, "What a failure looks like"): keepalives
# notice a silent peer in 5 + 2×3 s, tcp_user_timeout gives up on data unacknowledged for 10 s, and a URL
# naming several nodes lands on the one that takes writes.  No statement_timeout: a commit waiting for
# the synchronous standby that is cancelled is still committed on the primary
# (https://www.postgresql.org/docs/15/warm-standby.html#SYNCHRONOUS-REPLICATION-HA).
RESILIENCE: dict[str, str] = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
    "target_session_attrs": "read-write",
}
QUERY_PARAMS = frozenset(
    {"host", "target_session_attrs", "sslmode", "sslrootcert", "sslcert", "sslkey", "application_name"}
    | set(RESILIENCE)
)


def _parse_postgres(url: str, netloc: str, path: str, query: str) -> StoreUrl:
    """``postgresql://user:password@h1:5432,h2:5432/dbname?target_session_attrs=read-write`` (libpq's URI form,
    https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING): one node or every node of a cell."""
    userinfo, _, hostlist = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    try:
        params = dict(parse_qsl(query, strict_parsing=bool(query)))
    except ValueError:
        raise DatabaseUrlError(f"malformed database URL {redact(url)!r}: bad query") from None
    unknown = sorted(set(params) - QUERY_PARAMS)
    if unknown:
        raise DatabaseUrlError(
            f"database URL {redact(url)!r}: unknown parameter {unknown[0]!r} (known: {', '.join(sorted(QUERY_PARAMS))})"
        )
    hosts, ports = [], []
    for node in hostlist.split(",") if hostlist else []:
        host, port = _host_port(url, node)
        hosts.append(host)
        ports.append(port)
    socket_dir = params.pop("host", "")
    if socket_dir and not hosts:
        hosts, ports = [socket_dir], ["5432"]
    dbname = unquote(path.lstrip("/"))
    if not hosts or not dbname or not user:
        raise DatabaseUrlError(
            f"incomplete PostgreSQL URL {redact(url)!r}: need postgresql://user:password@host:port/dbname"
        )
    return StoreUrl(
        kind="postgres",
        raw=url,
        host=",".join(hosts),
        port=",".join(ports),
        user=unquote(user),
        password=unquote(password),
        dbname=dbname,
        schema=partition_schema(0),
        params=tuple(sorted(params.items())),
    )


def _host_port(url: str, node: str) -> tuple[str, str]:
    """One ``host[:port]`` of a URL's node list (``[::1]:5432`` for IPv6)."""
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = node.partition(":")
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise DatabaseUrlError(f"malformed database URL {redact(url)!r}: bad host or port {node!r}")
    return unquote(host), port or "5432"


def libpq_params(store: StoreUrl) -> dict[str, str]:
    """The libpq parameters beyond the address: ``RESILIENCE``, then what the URL asks."""
    return RESILIENCE | dict(store.params)


POOL_SIZE = 4  # connections an event store keeps open (more are opened as needed, up to 16 more)


def event_store_env(store: StoreUrl, *, create_tables: bool, pool_size: int = POOL_SIZE) -> dict[str, str]:
    """The library's settings for ``store``, prefixed for the ``Ledger`` application.

    ``pool_size`` is how many connections stay open while idle: a process
    with many partitions keeps none (each partition's pool opens them on
    first use), so connections grow with use, not with partitions × pools.
    """
    env: dict[str, str] = {"CREATE_TABLE": "y" if create_tables else "n"}
    if store.kind == "memory":
        env["PERSISTENCE_MODULE"] = "eventsourcing.popo"
    elif store.kind == "sqlite":
        env |= {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": store.path,
            "SQLITE_LOCK_TIMEOUT": "10",
            "APPLICATION_RECORDER_TOPIC": "adapters.recorders:LedgerSQLiteRecorder",
        }
    else:
        env |= {
            "POSTGRES_HOST": store.host,
            "POSTGRES_PORT": store.port,
            "POSTGRES_USER": store.user,
            "POSTGRES_PASSWORD": store.password,
            "POSTGRES_DBNAME": store.dbname,
            "POSTGRES_SCHEMA": store.schema,
            # also the wait for a pooled connection, which the library retries ten times: kept short so a
            # dead server is noticed in seconds (api/db_gate.py), not minutes
            "POSTGRES_CONNECT_TIMEOUT": "2",
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_POOL_SIZE": str(pool_size),
            "POSTGRES_MAX_OVERFLOW": "16",
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
            # the library's recorder, subclassed: several streams per query, no NOTIFY (adapters/recorders.py)
            "APPLICATION_RECORDER_TOPIC": "adapters.recorders:LedgerPostgresRecorder",
            # the library's factory, subclassed to give its pool keepalives and the cell's primary
            "PERSISTENCE_MODULE": "adapters.recorders:LedgerPostgresFactory",
            "POSTGRES_LIBPQ_PARAMS": json.dumps(libpq_params(store)),
        }
    return {ENV_PREFIX + key: value for key, value in env.items()}


def connection_kwargs(store: StoreUrl, timeout: int, *, autocommit: bool = False) -> dict[str, Any]:
    """How to connect to ``store``, giving up after ``timeout`` seconds (``connect``, the async store's pool)."""
    return (
        {
            "host": store.host,
            "port": store.port,
            "user": store.user,
            "password": store.password,
            "dbname": store.dbname,
            "connect_timeout": timeout,
            "autocommit": autocommit,
        }
        | libpq_params(store)
        | ({"options": f"-c search_path={store.schema}"} if store.schema else {})
    )


def connect(store: StoreUrl, timeout: int, *, autocommit: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
    """A new PostgreSQL connection to ``store`` that gives up after ``timeout`` seconds."""
    return psycopg.connect(**connection_kwargs(store, timeout, autocommit=autocommit))


def ping(store: StoreUrl, timeout: int = 1) -> None:
    """One round trip on a fresh connection, within ``timeout`` seconds; raises when the store cannot answer."""
    if store.kind == "memory":
        return
    if store.kind == "sqlite":
        with sqlite3.connect(store.path, timeout=timeout) as conn:
            conn.execute("SELECT 1").fetchall()
        return
    with connect(store, timeout) as conn:
        conn.execute("SELECT 1").fetchall()


def check_reachable(store: StoreUrl, *, create: bool = False) -> None:
    """Fail fast, in one line, when the store cannot be opened.

    The library retries connection errors for tens of seconds before it
    gives up; a user who mistyped a host deserves an answer sooner.  A SQLite
    file is made only when ``create`` (``db init``, ``serve``): a read command
    pointed at a mistyped path must not leave an empty database behind.
    """
    if store.kind == "memory" or (store.kind == "sqlite" and store.path == ":memory:"):
        return
    if store.kind == "sqlite":
        path = Path(store.path)
        if not create and not path.exists():
            raise DatabaseNotInitialised(f"database {store} does not exist: check the URL, or run `zhangben db init`")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sqlite3.connect(path).close()
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(f"cannot open database {store}: {exc}") from None
        return
    try:
        with connect(store, 5) as conn:
            (encoding,) = conn.execute("SHOW server_encoding").fetchone() or ("UTF8",)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if store.password:
            reason = reason.replace(store.password, "***")
        raise DatabaseUnavailable(f"cannot reach database {store}: {reason}") from None
    if isinstance(encoding, bytes):  # how a SQL_ASCII server answers text
        encoding = encoding.decode("ascii", errors="replace")
    if str(encoding).upper() not in ("UTF8", "UTF-8"):
        # SQL_ASCII (initdb's default without a UTF-8 locale) makes every text column bytes to the driver
        raise DatabaseUrlError(
            f"database {store} is encoded {encoding}: the ledger keeps Chinese text and needs UTF8 "
            "(CREATE DATABASE … ENCODING 'UTF8' TEMPLATE template0, or initdb -E UTF8)"
        )
