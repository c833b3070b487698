"""A whole development stack as processes: ``zhangben sandbox`` and ``zhangben serve`` on free ports.

The tour (``zhangben demo``) and the end-to-end tests start exactly what a
user would start, through the command line, in a scratch directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sandbox.keyset import init_keyset


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    root: Path
    ledger: str
    sandbox: str
    env: dict[str, str]
    database_url: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cli(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "zhangben.cli", *args], env=self.env, cwd=self.root,
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise StackError(f"zhangben {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout.strip()


def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"{url} did not start (see {log})") from None
            time.sleep(0.1)


@contextmanager
def running_stack(root: Path, database_url: str, *, workers: int = 1, serve_args: tuple[str, ...] = ()) -> Iterator[Stack]:
    """Keys, config, schema, then the sandbox and the ledger; both stopped on exit."""
    ledger_port, sandbox_port = free_port(), free_port()
    ledger, sandbox = f"http://127.0.0.1:{ledger_port}", f"http://127.0.0.1:{sandbox_port}"
    init_keyset(root / "keys", root / "zhangben.toml", ledger, sandbox)
    env = {**os.environ, "ZHANGBEN_CONFIG": str(root / "zhangben.toml"), "ZHANGBEN_DATABASE_URL": database_url}
    stack = Stack(root, ledger, sandbox, env, database_url)
    stack.cli("db", "init")
    log_path = root / "processes.log"
    log = log_path.open("wb")
    python = [sys.executable, "-m", "zhangben.cli"]
    try:
        stack.processes.append(subprocess.Popen([*python, "sandbox", "--port", str(sandbox_port)], env=env, cwd=root,
                                                stdout=log, stderr=subprocess.STDOUT))
        _wait(f"{sandbox}/sandbox/clock", stack.processes[-1], log_path)
        stack.processes.append(subprocess.Popen(
            [*python, "serve", "--port", str(ledger_port), "--workers", str(workers), *serve_args],
            env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT))
        _wait(f"{ledger}/healthz", stack.processes[-1], log_path)
        yield stack
    finally:
        for process in stack.processes:
            process.terminate()
        for process in stack.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
