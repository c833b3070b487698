from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from adapters import schemas
from adapters.persistence import parse_url
from zhangben.pgserver import PostgresUnavailable, ThrowawayPostgres

pytest_plugins = ["tests.fixtures_sandbox"]

# A test that mostly waits (a partition moving under a storm) is handed out first: its waits then overlap the
# CPU-bound rest of the suite instead of ending it (pytest-xdist deals files in collection order)
STARTED_FIRST = ("tests/integration/test_partition_move.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(STARTED_FIRST))  # stable: the rest keep their order


settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    """The session's own PostgreSQL; a missing server binary fails loudly, never skips."""
    try:
        server = ThrowawayPostgres()
        server.start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    server: ThrowawayPostgres = request.getfixturevalue("postgres")
    url = server.create_database()
    schemas.prepare(parse_url(url))  # partition 0's schema, as `db init` leaves it, for tests that make tables alone
    return url


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 22, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
