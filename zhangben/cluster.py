"""Cells of three Patroni nodes on loopback, for development, the tests and ``make bench``.

``zhangben dev cluster up`` starts one etcd and two cells (``a``, ``b``), each
a PostgreSQL cluster of three nodes run by Patroni in strict synchronous
mode (https://patroni.readthedocs.io/en/latest/replication_modes.html): a
commit is acknowledged once it is on the primary and on its synchronous
standby.  ``down`` stops them and removes their files.  Production runs
the same shape on three machines per cell (docs/scale-out.md).

Patroni comes from PyPI (``patroni[etcd3,psycopg3]``), in a virtual
environment made from the system's ``/usr/bin/python3`` so that the
``postgres`` user (PostgreSQL's ``initdb`` refuses root) can run it; etcd is
Debian's ``etcd-server``.  ``make cluster-tools`` installs both.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from zhangben.launch import free_port
from zhangben.pgserver import USER, find_bindir

PATRONI_VENV = Path(__file__).resolve().parent.parent / ".patroni"
# Patroni's timings (https://patroni.readthedocs.io/en/latest/dynamic_configuration.html): a dead primary's
# leader key lapses after TTL, and a replica is promoted within a loop after; ttl ≥ loop_wait + 2×retry_timeout.
# 20 s is the least TTL Patroni takes (a smaller one is raised to it: promotions took 20 s with 10 asked for)
TTL = 20
LOOP_WAIT = 1
RETRY_TIMEOUT = 4
DATABASE = "zhangben"
STATE_FILE = "cluster.json"


class ClusterError(RuntimeError):
    """The cluster could not be started, found or stopped; the message says why (never a password)."""


def patroni_bin() -> Path:
    """Patroni's command: ``ZHANGBEN_PATRONI``, else the one ``make cluster-tools`` installs in ``.patroni``."""
    command = Path(os.environ.get("ZHANGBEN_PATRONI") or PATRONI_VENV / "bin" / "patroni")
    if not command.exists():
        raise ClusterError(f"Patroni not found at {command}: run `make cluster-tools` (or set ZHANGBEN_PATRONI)")
    return command


def etcd_bin() -> Path:
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if not found:
        raise ClusterError("etcd not found: apt-get install etcd-server (or `make cluster-tools`)")
    return Path(found)


@dataclass
class Node:
    """One Patroni node: its ports, its data directory, and the Patroni process running it (``pid``)."""

    name: str
    pg_port: int
    api_port: int
    root: str
    pid: int = 0

    @property
    def data_dir(self) -> Path:
        return Path(self.root) / "data"

    def postgres_pids(self) -> list[int]:
        """The postmaster and every process it forked (backends, walsender, checkpointer …).

        ``postmaster.pid`` outlives a killed server, and its number may since
        be another process's (pids are reused): the postmaster counts only
        if its command line names this node's data directory."""
        try:
            postmaster = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        if str(self.data_dir).encode() not in _cmdline(postmaster):
            return []
        return [postmaster, *_children(postmaster)]

    def processes(self) -> list[int]:
        """Patroni and its PostgreSQL: what a machine's loss takes away (Patroni only while its command line is
        still this node's: a number reused by another process is never signalled)."""
        patroni = [self.pid] if self.pid and str(Path(self.root) / "patroni.yml").encode() in _cmdline(self.pid) else []
        return [p for p in [*patroni, *self.postgres_pids()] if _alive(p)]


@dataclass
class Cell:
    """A PostgreSQL cluster of nodes run by Patroni under one scope."""

    name: str
    nodes: list[Node]
    password: str = field(repr=False)

    def url(self, dbname: str = DATABASE) -> str:
        """Every node in one URL: libpq finds the primary itself (``target_session_attrs``), through failovers."""
        hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in self.nodes)
        return f"postgresql://{USER}:{self.password}@{hosts}/{dbname}?target_session_attrs=read-write"

    def members(self) -> list[dict[str, Any]]:
        """Patroni's view of the cell (``GET /cluster`` on any node that answers)."""
        for node in self.nodes:
            try:
                answer = httpx.get(f"http://127.0.0.1:{node.api_port}/cluster", timeout=1)
                return list(answer.json().get("members", []))
            except (httpx.HTTPError, ValueError):
                continue
        return []

    def primary(self) -> Node | None:
        leaders = {m["name"] for m in self.members() if m.get("role") == "leader" and m.get("state") == "running"}
        return next((n for n in self.nodes if n.name in leaders), None)

    def sync_standby(self) -> Node | None:
        standbys = {m["name"] for m in self.members() if m.get("role") == "sync_standby"}
        return next((n for n in self.nodes if n.name in standbys), None)

    def healthy(self, synchronous: bool = True) -> bool:
        """A primary that takes writes and a synchronous standby streaming from it (any replica streaming, for
        an asynchronous cell), every node running."""
        members = self.members()
        standby = "sync_standby" if synchronous else "replica"
        return (
            len(members) == len(self.nodes)
            and all(m.get("state") in ("running", "streaming") for m in members)
            and any(m.get("role") == "leader" for m in members)
            and any(m.get("role") == standby and m.get("state") == "streaming" for m in members)
        )

    def wait_healthy(self, timeout: float = 90, synchronous: bool = True) -> Node:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            primary = self.primary()
            if primary and self.healthy(synchronous) and _writable(self.url("postgres")):
                return primary
            time.sleep(0.3)
        raise ClusterError(f"cell {self.name} has no healthy primary and synchronous standby after {timeout:.0f}s")


@dataclass
class DevCluster:
    """etcd and ``cells`` cells of ``nodes`` Patroni nodes under ``root``, on free loopback ports."""

    root: Path
    cells: list[Cell] = field(default_factory=list)
    etcd_port: int = 0
    etcd_pid: int = 0
    durable: bool = False  # benchmarks want real fsyncs; tests want speed
    synchronous: bool = True  # off only for the tests' negative control
    namespace: str = field(default_factory=lambda: f"/zhangben-{secrets.token_hex(4)}/")

    @classmethod
    def create(
        cls, root: Path, cells: int = 2, nodes: int = 3, *, durable: bool = False, synchronous: bool = True
    ) -> DevCluster:
        if not 1 <= cells <= 26 or not 1 <= nodes <= 9:
            raise ClusterError("a development cluster has 1 to 26 cells of 1 to 9 nodes")
        root.mkdir(parents=True, exist_ok=True)
        cluster = cls(root.resolve(), durable=durable, synchronous=synchronous)
        for c in range(cells):
            name = "abcdefghijklmnopqrstuvwxyz"[c]
            members = [
                Node(f"{name}{i + 1}", free_port(), free_port(), str(cluster.root / f"{name}{i + 1}"))
                for i in range(nodes)
            ]
            cluster.cells.append(Cell(name, members, secrets.token_urlsafe(18)))
        return cluster

    def cell(self, name: str) -> Cell:
        for cell in self.cells:
            if cell.name == name:
                return cell
        raise ClusterError(f"no cell {name!r} (cells: {', '.join(c.name for c in self.cells)})")

    # -- starting and stopping -------------------------------------------------------------------------------

    def start(self) -> None:
        """etcd, then every cell: its first node bootstraps, the others clone from it; returns once each cell
        has a primary and a synchronous standby."""
        patroni = patroni_bin()
        find_bindir()  # PostgreSQL's binaries, or one clear line
        _check_open(self.root)
        _own(self.root)
        self._start_etcd()
        for cell in self.cells:
            for node in cell.nodes:
                self._write_config(cell, node)
            self.start_node(cell.nodes[0], patroni)
            deadline = time.monotonic() + 60
            while cell.primary() is None:
                if time.monotonic() > deadline:
                    raise ClusterError(f"cell {cell.name}: no primary after 60s ({self.log_tail(cell.nodes[0])})")
                time.sleep(0.3)
            for node in cell.nodes[1:]:
                self.start_node(node, patroni)
        for cell in self.cells:
            cell.wait_healthy(synchronous=self.synchronous)
            with psycopg.connect(cell.url("postgres"), autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def start_node(self, node: Node, patroni: Path | None = None) -> None:
        """Start (or restart, after a kill) ``node``'s Patroni, which starts its PostgreSQL."""
        log = open(Path(node.root) / "patroni.log", "ab")  # noqa: SIM115 — the child keeps it
        process = subprocess.Popen(  # noqa: S603 — Patroni, with the config written above
            [str(patroni or patroni_bin()), str(Path(node.root) / "patroni.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=_run_as(),
            start_new_session=True,
            cwd=node.root,
        )
        log.close()
        node.pid = process.pid

    def stop(self) -> None:
        """Everything stopped at once (SIGKILL: nothing here is kept) and the files removed."""
        pids = [p for cell in self.cells for n in cell.nodes for p in n.processes()]
        if self.etcd_pid and _alive(self.etcd_pid) and str(self.root).encode() in _cmdline(self.etcd_pid):
            pids.append(self.etcd_pid)
        _signal(pids, signal.SIGKILL)
        _reap(pids)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- faults ---------------------------------------------------------------------------------------------

    def kill(self, node: Node) -> None:
        """A machine lost: Patroni and every PostgreSQL process of ``node`` stopped, then killed (SIGKILL)."""
        for _ in range(2):  # frozen first (twice: a child forked meanwhile too), so nothing restarts what dies
            _signal(node.processes(), signal.SIGSTOP)
        pids = node.processes()
        _signal(pids, signal.SIGKILL)
        _reap(pids)

    def freeze(self, node: Node) -> list[int]:
        """A machine that stops answering without closing anything (SIGSTOP to Patroni and PostgreSQL): its
        sockets stay open, its kernel still acknowledges; returns what ``thaw`` wakes."""
        frozen: list[int] = []
        for _ in range(2):
            pids = [p for p in node.processes() if p not in frozen]
            _signal(pids, signal.SIGSTOP)
            frozen += pids
        return frozen

    def stall_replication(self, primary: Node) -> list[int]:
        """The primary stops sending WAL to its replicas (its walsenders stopped) while it takes writes: what it
        commits from now on is on it alone (stopping a replica's walreceiver is not enough: the WAL already sent
        waits in its socket's buffer)."""
        senders = [p for p in primary.postgres_pids() if b"walsender" in _cmdline(p)]
        _signal(senders, signal.SIGSTOP)
        return senders

    def thaw(self, pids: list[int]) -> None:
        _signal([p for p in pids if _alive(p)], signal.SIGCONT)

    def switchover(self, cell: Cell) -> Node:
        """A planned switchover to the synchronous standby (Patroni's ``POST /switchover``); returns the new
        primary once Patroni reports it (https://patroni.readthedocs.io/en/latest/rest_api.html)."""
        primary, standby = cell.primary(), cell.sync_standby()
        if primary is None or standby is None:
            raise ClusterError(f"cell {cell.name} has no primary and synchronous standby to switch over")
        answer = httpx.post(
            f"http://127.0.0.1:{primary.api_port}/switchover",
            json={"leader": primary.name, "candidate": standby.name},
            timeout=60,
        )
        if answer.status_code != 200:
            raise ClusterError(f"switchover refused: {answer.status_code} {answer.text[:200]}")
        return standby

    def log_tail(self, node: Node, lines: int = 5) -> str:
        try:
            return " | ".join((Path(node.root) / "patroni.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "no log"

    # -- what `zhangben dev cluster up` leaves behind ------------------------------------------------------

    def save(self) -> None:
        """The cluster's state for ``down`` (0600: it holds the passwords), and each cell's URL in a file of
        its own for ``[[cells]] url_file``."""
        _private(self.root / STATE_FILE, json.dumps(asdict(self), default=str, indent=2))
        for cell in self.cells:
            _private(self.root / f"{cell.name}.url", cell.url() + "\n")

    @classmethod
    def load(cls, root: Path) -> DevCluster:
        try:
            data = json.loads((root / STATE_FILE).read_text())
        except (OSError, ValueError):
            raise ClusterError(f"no cluster at {root}: start one with `zhangben dev cluster up`") from None
        cells = [Cell(c["name"], [Node(**n) for n in c["nodes"]], c["password"]) for c in data.pop("cells")]
        return cls(Path(data.pop("root")), cells, **data)

    def config_lines(self) -> Iterator[str]:
        """The ``[[cells]]`` tables for ``zhangben.toml`` (URLs by file: never printed)."""
        for cell in self.cells:
            yield "[[cells]]"
            yield f'name = "{cell.name}"'
            yield f'url_file = "{self.root / (cell.name + ".url")}"'
            yield ""

    # -- helpers ----------------------------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        self.etcd_port, peer = free_port(), free_port()
        data = self.root / "etcd"
        log = open(self.root / "etcd.log", "ab")  # noqa: SIM115 — the child keeps it
        process = subprocess.Popen(  # noqa: S603 — Debian's etcd on loopback ports
            [
                str(etcd_bin()),
                "--name=etcd",
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=etcd=http://127.0.0.1:{peer}",
                *([] if self.durable else ["--unsafe-no-fsync"]),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.etcd_pid = process.pid
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.etcd_port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise ClusterError(f"etcd did not start (see {self.root / 'etcd.log'})")
            time.sleep(0.2)

    def _write_config(self, cell: Cell, node: Node) -> None:
        root = Path(node.root)
        root.mkdir(parents=True, exist_ok=True)
        parameters: dict[str, Any] = {
            "wal_level": "logical",  # a partition moves to another cell by logical replication
            "max_connections": 500,
            "max_wal_senders": 16,
            "max_replication_slots": 16,
            "wal_log_hints": "on",
            "unix_socket_directories": str(root),
        }
        if not self.durable:  # full_page_writes stays on: pg_rewind needs it to rejoin a deposed primary
            parameters |= {"fsync": "off"}
        config = {
            "scope": f"cell-{cell.name}",
            "namespace": self.namespace,
            "name": node.name,
            "log": {"level": "WARNING"},
            "restapi": {"listen": f"127.0.0.1:{node.api_port}", "connect_address": f"127.0.0.1:{node.api_port}"},
            "etcd3": {"host": f"127.0.0.1:{self.etcd_port}"},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL,
                    "loop_wait": LOOP_WAIT,
                    "retry_timeout": RETRY_TIMEOUT,
                    # an asynchronous cell (the tests' negative control) fails over whatever its replicas lack
                    "maximum_lag_on_failover": 1048576 if self.synchronous else 1 << 40,
                    "synchronous_mode": self.synchronous,
                    "synchronous_mode_strict": self.synchronous,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": parameters},
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"auth": "scram-sha-256"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.data_dir),
                "bin_dir": str(find_bindir()),
                "pgpass": str(root / "pgpass"),
                "authentication": {
                    "superuser": {"username": USER, "password": cell.password},
                    "replication": {"username": "replicator", "password": cell.password},
                    "rewind": {"username": USER, "password": cell.password},
                },
                "parameters": {"unix_socket_directories": str(root)},
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 scram-sha-256",
                    "host replication replicator 127.0.0.1/32 scram-sha-256",
                ],
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }
        (root / "patroni.yml").write_text(json.dumps(config, indent=2))  # JSON is YAML
        _own(root)
        (root / "patroni.yml").chmod(0o600)


def _writable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
            row = conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()
            return bool(row and row[0])
    except psycopg.Error:
        return False


def _run_as() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


def _own(path: Path) -> None:
    """Owned by the ``postgres`` user when running as root: Patroni and PostgreSQL run as that user."""
    user = _run_as()
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chown(item, entry.pw_uid, entry.pw_gid)


def _check_open(root: Path) -> None:
    """As root, the ``postgres`` user must reach ``root``: every folder above it open to others."""
    if _run_as() is None:
        return
    for folder in root.parents:
        if not folder.stat().st_mode & 0o001:
            raise ClusterError(f"{folder} is closed to the postgres user that runs Patroni: put the cluster elsewhere")


def _private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(status.parent.name))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pids: list[int], timeout: float = 10) -> None:
    """Wait until ``pids`` are gone (children of this process are reaped so they do not linger as zombies)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.02)
