"""A throwaway PostgreSQL cluster for the test session and ``make bench``.

Started from the PostgreSQL binaries on the machine, in a temporary
directory, on a free loopback port; removed at the end.  ``initdb``
refuses to run as root, so when the tests run as root the cluster is made
and run by the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from zhangben.launch import free_port as launch_free_port

USER = "zhangben"


class PostgresUnavailable(RuntimeError):
    pass


def find_bindir() -> Path:
    explicit = os.environ.get("ZHANGBEN_PG_BINDIR")
    candidates = [explicit] if explicit else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL 15 "
        "(Debian: apt-get install postgresql-15) or set ZHANGBEN_PG_BINDIR"
    )


def free_port() -> int:
    return launch_free_port()  # below the ephemeral range (zhangben/launch.py)


class ThrowawayPostgres:
    def __init__(self, durable: bool = False) -> None:
        self.durable = durable  # benchmarks want real fsyncs; tests want speed
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="zhangben-pg-"))
        self.datadir = self.root / "data"
        self.port = free_port()
        self.run_as: str | None = None
        self.password = secrets.token_urlsafe(18)  # a new cluster, a new password (loopback only, removed after)
        if os.geteuid() == 0:
            self.run_as = "postgres"
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._counter = 0

    def _run(self, *args: str) -> None:
        result = subprocess.run(  # noqa: S603 — PostgreSQL's own binaries, found on this machine
            [str(self.bindir / args[0]), *args[1:]],
            user=self.run_as,
            capture_output=True,
            text=True,
            cwd=self.root,
        )
        if result.returncode != 0:
            raise PostgresUnavailable(f"{args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self.up()

    def up(self) -> None:
        """Start the server on the existing data directory (after ``start``, or after ``down``)."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=1000"
        options += " -c wal_level=logical"  # `zhangben partitions move` between two databases of this server
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.datadir), "-o", options, "-l", str(self.root / "log"), "-w", "start")
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def url(self, dbname: str) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its URL."""
        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def down(self) -> None:
        """Stop the server as a crash would (``-m immediate``), keeping its data: an outage, not the end."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "stop")

    def __enter__(self) -> ThrowawayPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "stop")
        except PostgresUnavailable:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
