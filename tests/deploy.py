"""A real deployment per store for the API tests: ``zhangben.deployment.deploy`` on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Iterator
from unittest.mock import patch

import pytest

from zhangben.cli import main
from zhangben.deployment import Deployment, deploy
from zhangben.launch import Stack, StackError

__all__ = [
    "STORES",
    "Deployment",
    "cli_in_process",
    "deploy",
    "deployment",
    "run_cli",
    "shared_postgres",
    "shared_sqlite",
    "sharing",
]

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


def cli_in_process(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """``zhangben …`` in the stack's directory, with its config and database — in this process:
    ``zhangben.cli.main`` whole, its exit code and both streams.  The CLI as a process of its own is
    tests/integration/test_cli.py's; a process per command elsewhere cost the suite a minute of imports."""
    out, err = io.StringIO(), io.StringIO()
    with (
        patch.dict(os.environ, stack.env),
        contextlib.chdir(stack.root),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's own refusals
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def run_cli(stack: Stack, *args: str) -> str:
    """What ``Stack.cli`` answers — the output, or ``StackError`` with the error line — run in this process."""
    done = cli_in_process(stack, *args)
    if done.returncode != 0:
        raise StackError(f"zhangben {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()
