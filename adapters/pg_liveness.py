"""Is an idle PostgreSQL connection still alive?  Asked without a round trip.

A server that restarted while a connection sat idle has closed its socket,
but psycopg learns it only when a statement fails on it.  An idle socket that
is readable holds the server's goodbye (an error message, then EOF): reading
it tells a dead connection from a live one in microseconds, so a pooled or
shared connection can be replaced *before* a request fails on it
(docs/operations.md, "A database outage").
"""

from __future__ import annotations

import select
import threading
from typing import Any

import psycopg
import psycopg_pool

MAX_READS = 4  # the goodbye message, then EOF; a chatty live server stops well before


def dropped(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """An idle connection the server has hung up on.

    Readable with no query in flight means the server sent something: its
    goodbye (an error message, read by the first ``consume_input``) and then
    EOF (which the next one fails on).  A live server's stray message (a
    notice) leaves the socket quiet after one read.
    """
    for _ in range(MAX_READS):
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        try:
            conn.pgconn.consume_input()
        except psycopg.OperationalError:
            return True
        if conn.pgconn.status != psycopg.pq.ConnStatus.OK:
            return True
    return False


class CheckoutGuard:
    """A pool's ``check`` callback: a connection handed out is one the server has not hung up on.

    psycopg_pool calls ``check`` on every checkout and, when it raises, drops
    that connection and hands out another (https://www.psycopg.org/psycopg3/docs/api/pool.html,
    ``check``).  One dead connection means the server restarted and its
    siblings died too, so the first one found has the pool swept at once
    (``ConnectionPool.check``: a round trip each, the dead replaced) — else
    every dead sibling would fail the same way, and the pool waits 1 s, 2 s …
    between failed checks.
    """

    def __init__(self, pool: psycopg_pool.ConnectionPool[Any]) -> None:
        self._pool = pool
        self._sweeping = threading.Lock()

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        if not dropped(conn):
            return
        if self._sweeping.acquire(blocking=False):
            try:
                self._pool.check()
            finally:
                self._sweeping.release()
        raise hung_up()


def hung_up() -> psycopg.OperationalError:
    """What a pool's ``check`` raises for a connection the server hung up on: the pool replaces it."""
    return psycopg.OperationalError("the server closed this pooled connection (it restarted); replaced")


def guard(pool: psycopg_pool.ConnectionPool[Any]) -> None:
    """Install :class:`CheckoutGuard` on a pool the event store library built (it sets ``check`` only to pre-ping).

    The library's own ``POSTGRES_PRE_PING`` costs a round trip on every
    checkout; this costs a ``select()`` on the socket.
    """
    pool._check = CheckoutGuard(pool)
