"""A real deployment per store: ``zhangben sandbox`` and ``zhangben serve`` as processes on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.keyset import DIRECT, PARTNER, init_keyset
from tests.fixtures_sandbox import free_port


@dataclass
class Deployment:
    root: Path
    ledger: str
    sandbox: str
    keys: dict[str, str]
    database_url: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def client(self, role: str = "merchant") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.ledger, headers=headers, timeout=30)

    def pay(self, out_trade_no: str, **extra: Any) -> dict[str, Any]:
        answer = httpx.post(f"{self.sandbox}/sandbox/pay", json={"out_trade_no": out_trade_no} | extra, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def faults(self, **faults: Any) -> None:
        assert httpx.post(f"{self.sandbox}/sandbox/faults", json=faults, timeout=10).status_code == 200

    def wait_status(self, no: str, status: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as http:
            while True:
                view = http.get(f"/v1/orders/{no}").json()
                if view.get("status") == status or time.monotonic() > deadline:
                    assert view.get("status") == status, view
                    return view
                time.sleep(0.05)


def _cli(*args: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "zhangben.cli", *args], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not start") from None
            time.sleep(0.1)


@contextmanager
def deploy(root: Path, database_url: str, workers: int = 1) -> Iterator[Deployment]:
    """``zhangben sandbox`` and ``zhangben serve`` as processes on free ports, with keys for every role."""
    ledger_port, sandbox_port = free_port(), free_port()
    ledger, sandbox = f"http://127.0.0.1:{ledger_port}", f"http://127.0.0.1:{sandbox_port}"
    init_keyset(root / "keys", root / "zhangben.toml", ledger, sandbox)
    env = {**os.environ, "ZHANGBEN_CONFIG": str(root / "zhangben.toml"), "ZHANGBEN_DATABASE_URL": database_url}
    _cli("db", "init", env=env, cwd=root)
    keys = {role: _cli("apikey", "create", "--merchant", DIRECT.mchid, "--role", role, env=env, cwd=root)
            for role in ("merchant", "auditor", "finance")}
    keys["partner"] = _cli("apikey", "create", "--merchant", PARTNER.sub_mchid, "--role", "merchant", env=env, cwd=root)
    deployment = Deployment(root, ledger, sandbox, keys, database_url)
    log = open(root / "processes.log", "wb")  # noqa: SIM115 — closed with the processes
    python = [sys.executable, "-m", "zhangben.cli"]
    sandbox_process = subprocess.Popen([*python, "sandbox", "--port", str(sandbox_port)], env=env, cwd=root,
                                       stdout=log, stderr=subprocess.STDOUT)
    deployment.processes.append(sandbox_process)
    try:
        _wait(f"{sandbox}/sandbox/clock", sandbox_process)
        serve = subprocess.Popen([*python, "serve", "--port", str(ledger_port), "--workers", str(workers)], env=env,
                                 cwd=root, stdout=log, stderr=subprocess.STDOUT)
        deployment.processes.append(serve)
        _wait(f"{ledger}/healthz", serve)
        yield deployment
    finally:
        for process in deployment.processes:
            process.terminate()
        for process in deployment.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"deploy-{request.param}")
    if request.param == "postgres":
        url, workers = request.getfixturevalue("postgres").create_database("api"), 2
    else:
        url, workers = f"sqlite:///{root}/ledger.db", 1
    with deploy(root, url, workers) as deployment:
        yield deployment
