"""A real deployment per store for the API tests: ``zhangben.deployment.deploy`` on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zhangben.deployment import Deployment, deploy

__all__ = ["STORES", "Deployment", "deploy", "deployment", "shared_postgres", "shared_sqlite", "sharing"]

STORES = ["sqlite", "postgres"]


def _deployed(store: str, request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = factory.mktemp(f"deploy-{store}")
    if store == "postgres":
        url, workers = request.getfixturevalue("postgres").create_database("api"), 2
    else:
        url, workers = f"sqlite:///{root}/ledger.db", 1
    with deploy(root, url, workers) as deployment:
        yield deployment


@pytest.fixture(scope="module", params=STORES)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A module's own deployment: for tests that count what the whole deployment holds, move its clock or its
    keys."""
    yield from _deployed(request.param, request, tmp_path_factory)


@pytest.fixture(scope="session")
def shared_sqlite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The session's SQLite deployment (one per test worker), for the modules that do not disturb each other."""
    yield from _deployed("sqlite", request, tmp_path_factory)


@pytest.fixture(scope="session")
def shared_postgres(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The session's PostgreSQL deployment (one per test worker), likewise."""
    yield from _deployed("postgres", request, tmp_path_factory)


def sharing(request: pytest.FixtureRequest) -> Deployment:
    """The body of a module's ``deployment`` fixture that shares the session's deployment of its store (the
    module's own order numbers, no clock moved, no count of everything held); the faults another module set are
    cleared first."""
    shared: Deployment = request.getfixturevalue(f"shared_{request.param}")
    shared.faults(reset=True)
    return shared
