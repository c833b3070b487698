"""After a PostgreSQL restart no pooled connection that died with the server is handed out.

The event store's pool keeps idle connections; a server restart kills them
all, and without a check at checkout the first statement on each fails (a
503 for a request that had nothing to do with the outage).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.pg_liveness import CheckoutGuard
from bootstrap.ledger import open_ledger
from zhangben.pgserver import ThrowawayPostgres


@pytest.fixture
def server() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres() as pg:
        yield pg


def test_every_checkout_after_a_restart_gets_a_live_connection(server: ThrowawayPostgres) -> None:
    ledger = open_ledger(server.create_database("live"), create_tables=True)
    try:
        pool = ledger.recorder.datastore.pool  # type: ignore[attr-defined]
        assert isinstance(pool._check, CheckoutGuard)
        held = [pool.getconn() for _ in range(4)]  # four idle connections in the pool
        for conn in held:
            pool.putconn(conn)
        server.down()
        server.up()
        for _ in range(8):  # each checkout: a statement straight away, no retry
            with pool.connection() as conn:
                assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    finally:
        ledger.close()
