"""A real deployment per store for the API tests: ``zhangben.deployment.deploy`` on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zhangben.deployment import Deployment, deploy

__all__ = ["Deployment", "deploy", "deployment", "shared_deployment", "sharing"]

STORES = ["sqlite", "postgres"]


def _deployed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"deploy-{request.param}")
    if request.param == "postgres":
        url, workers = request.getfixturevalue("postgres").create_database("api"), 2
    else:
        url, workers = f"sqlite:///{root}/ledger.db", 1
    with deploy(root, url, workers) as deployment:
        yield deployment


@pytest.fixture(scope="module", params=STORES)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A module's own deployment: for tests that count what the whole deployment holds, move its clock or its
    keys."""
    yield from _deployed(request, tmp_path_factory)


@pytest.fixture(scope="session", params=STORES)
def shared_deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One deployment per store for the whole session (per test worker), for the modules that do not disturb
    each other: their own order numbers, no clock moved, no count of everything held (``sharing``)."""
    yield from _deployed(request, tmp_path_factory)


def sharing(shared_deployment: Deployment) -> Deployment:
    """The body of a module's ``deployment`` fixture that shares the session's: the faults another module set
    are cleared first."""
    shared_deployment.faults(reset=True)
    return shared_deployment
