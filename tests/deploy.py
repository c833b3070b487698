"""A real deployment per store for the API tests: ``zhangben.deployment.deploy`` on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from adapters.persistence import StoreUrl
from bootstrap.partitioning import merchant_store as placed
from sandbox.keyset import init_keyset
from zhangben import deployment as deployments
from zhangben.cli import main
from zhangben.deployment import Deployment
from zhangben.launch import Stack, StackError

__all__ = [
    "STORES",
    "Deployment",
    "cli_in_process",
    "deploy",
    "deployment",
    "merchant_store",
    "run_cli",
    "shared_partitioned",
    "shared_postgres",
    "shared_sqlite",
    "sharing",
]

STORES = ["sqlite", "postgres"]
# the "partitioned" store: eight partitions on PostgreSQL (the test merchants are hashed onto 7, 6, 2 and 0),
# which the `*_partitioned.py` files run their suites on again
PARTITIONS = 8


# The keyset's RSA keys and certificates: generating them is most of a keyset's cost (1.4 s of CPU), so a test
# process makes them once and lays them into each deployment's keys folder before the stack writes the rest —
# `init_keyset` keeps files that exist, and every deployment still gets its own APIv3, v2, cashier and data keys.
RSA_FILES = (
    "*/apiclient_key.pem",
    "*/apiclient_cert.pem",
    "wechatpay/platform_key.pem",
    "wechatpay/platform_cert.pem",
    "wechatpay/pub_key_private.pem",
    "wechatpay/pub_key.pem",
    "wechatpay/tls_*.pem",
)


@functools.cache
def _rsa_made() -> Path:
    root = Path(tempfile.mkdtemp(prefix="zhangben-rsa-"))
    init_keyset(root / "keys", root / "zhangben.toml", "http://127.0.0.1:1", "http://127.0.0.1:2")
    return root / "keys"


def seed_rsa_keys(keys_dir: Path) -> None:
    """Lay this test process's RSA keys and certificates into ``keys_dir`` (0700 folders, 0600 files)."""
    made = _rsa_made()
    for pattern in RSA_FILES:
        for source in made.glob(pattern):
            target = keys_dir / source.relative_to(made)
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            target.chmod(0o600)
    keys_dir.chmod(0o700)


@contextlib.contextmanager
def deploy(root: Path, database_url: str, workers: int = 1, **plan: Any) -> Iterator[Deployment]:
    """``zhangben.deployment.deploy``, its keyset's RSA keys laid in first (``seed_rsa_keys``)."""
    seed_rsa_keys(root / "keys")
    with deployments.deploy(root, database_url, workers, **plan) as running:
        yield running


def merchant_store(deployment: Deployment, mchid: str) -> StoreUrl:
    """Where ``mchid``'s money is kept in ``deployment``'s database: its partition's schema (any store)."""
    return placed(deployment.env, mchid)


def _deployed(store: str, request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = factory.mktemp(f"deploy-{store}")
    extra = ""
    if store in ("postgres", "partitioned"):
        url, workers = request.getfixturevalue("postgres").create_database("api"), 2
        extra = f"\n[partitioning]\npartitions = {PARTITIONS}\n" if store == "partitioned" else ""
    else:
        url, workers = f"sqlite:///{root}/ledger.db", 1
    with deploy(root, url, workers, config_extra=extra) as deployment:
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


@pytest.fixture(scope="session")
def shared_partitioned(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """The session's deployment of eight partitions on PostgreSQL, likewise."""
    yield from _deployed("partitioned", request, tmp_path_factory)


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
