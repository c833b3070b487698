"""A real deployment per store for the API tests: ``zhangben.deployment.deploy`` on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zhangben.deployment import Deployment, deploy

__all__ = ["Deployment", "deploy", "deployment"]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"deploy-{request.param}")
    if request.param == "postgres":
        url, workers = request.getfixturevalue("postgres").create_database("api"), 2
    else:
        url, workers = f"sqlite:///{root}/ledger.db", 1
    with deploy(root, url, workers) as deployment:
        yield deployment
