"""The one launcher: the WeChat Pay sandbox and the ledger as processes, started as a user would start them.

``make serve`` (``python -m zhangben.launch``) runs it on :8900 and :8000
with SQLite under ``var/``, creating the keyset and config on first run,
and prints what a new user needs: the URLs, a ready API key for the demo
merchant, and the curl commands to create an order and pay it; Ctrl-C
stops both.  The tour (``zhangben demo``) and the end-to-end tests run the
same ``running_stack`` on free ports in a scratch directory.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from application.apikeys import ApiKeys, parse
from bootstrap.ledger import open_directory
from bootstrap.settings import load_settings
from bootstrap.wiring import init_database
from sandbox.keyset import DIRECT, V2, init_keyset

LEDGER_PORT, SANDBOX_PORT = 8000, 8900
KEY_FILE = Path("var/demo-api-key")


class StackError(RuntimeError):
    pass


def free_port() -> int:
    """A free port below the kernel's ephemeral range, for a server started a moment later.

    A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, which every outgoing
    connection draws from too: with tests on every core, one of them could take the port before the server
    binds it ("Address already in use").  Below that range only another ``free_port`` could, at random.
    """
    for _ in range(200):
        port = secrets.choice(_our_ports())
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as sock:  # a crowded machine: any free port
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_HANDED_OUT: set[int] = set()  # this process never hands out a port twice (two servers of one stack, say)
SLICES = 4


def _our_ports() -> range:
    """The ports below the ephemeral range; under pytest-xdist, a slice of its own per test worker (``gw0`` …),
    so two workers never pick the same port in the moment before their servers bind it."""
    low = _ephemeral_low()
    start = max(1024, low - 12_000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return range(start, low)
    width = (low - start) // SLICES
    first = start + (int(worker[2:]) % SLICES) * width
    return range(first, first + width)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; elsewhere the range starts higher still


def ensure_free(port: int, what: str) -> None:
    """Refuse to start when the port is taken: else the wait below would meet the other process and call it ours."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is not "taken"
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise StackError(
                f"port {port} for {what} is already in use (another `make serve`?); stop it or free the port"
            ) from None


@dataclass
class Stack:
    root: Path
    ledger: str
    sandbox: str
    env: dict[str, str]
    database_url: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "zhangben.cli", *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise StackError(f"zhangben {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout.strip()

    def running(self) -> bool:
        return all(process.poll() is None for process in self.processes)


def _wait(url: str, process: subprocess.Popen[bytes], where: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"{url} did not start (see {where})") from None
            time.sleep(0.1)


@dataclass(frozen=True)
class StackPlan:
    """How a stack runs: ``serve``'s workers and flags, fixed ports (else free ones), where the config and keys
    are (else made under the stack's root), and where the processes write (``Path("-")``: this terminal)."""

    workers: int = 1
    serve_args: tuple[str, ...] = ()
    ledger_port: int | None = None
    sandbox_port: int | None = None
    config: Path | None = None
    keys_dir: Path | None = None
    log_path: Path | None = None
    config_extra: str = ""  # TOML appended to the config the stack writes (a test's [admission] limits, say)
    # production's shape: `serve --api-only` and this many `zhangben work` processes beside it (docs/going-live.md)
    work: int = 0


@contextmanager
def running_stack(root: Path, database_url: str, plan: StackPlan = StackPlan()) -> Iterator[Stack]:
    """Keys and config (when missing), schema, then the sandbox and the ledger; both stopped on exit.

    The processes write to ``plan.log_path`` (default ``root/processes.log``), or to
    this terminal when it is ``Path("-")``.  The one harness of ``make serve``,
    ``zhangben demo`` and the tests' deployments (``tests/deploy.py``).
    """
    workers, serve_args, config, log_path = plan.workers, plan.serve_args, plan.config, plan.log_path
    ledger_port, sandbox_port = plan.ledger_port or free_port(), plan.sandbox_port or free_port()
    for port, what in ((sandbox_port, "the sandbox"), (ledger_port, "the ledger")):
        ensure_free(port, what)
    ledger, sandbox = f"http://127.0.0.1:{ledger_port}", f"http://127.0.0.1:{sandbox_port}"
    config = config or root / "zhangben.toml"
    if not config.exists():
        # the TLS listener's port chosen free as well (not "the next one"), and written where both sides read it
        init_keyset(plan.keys_dir or root / "keys", config, ledger, sandbox, f"https://127.0.0.1:{free_port()}")
        if plan.config_extra:
            with config.open("a", encoding="utf-8") as written:
                written.write("\n" + plan.config_extra)
    env = {**os.environ, "ZHANGBEN_CONFIG": str(config.resolve()), "ZHANGBEN_DATABASE_URL": database_url}
    stack = Stack(root, ledger, sandbox, env, database_url)
    init_database(load_settings(env))  # what `zhangben db init` does, without a process of its own
    to_terminal = log_path == Path("-")
    where = "the output above" if to_terminal else str(log_path or root / "processes.log")
    log: IO[bytes] | None = None if to_terminal else (log_path or root / "processes.log").open("wb")
    python = [sys.executable, "-m", "zhangben.cli"]
    stderr = subprocess.STDOUT if log is not None else None
    try:
        stack.processes.append(
            subprocess.Popen(
                [*python, "sandbox", "--port", str(sandbox_port)], env=env, cwd=root, stdout=log, stderr=stderr
            )
        )
        stack.processes.append(  # started together: the ledger needs WeChat only once it is asked to pay
            subprocess.Popen(
                [*python, "serve", "--port", str(ledger_port), "--workers", str(workers), *serve_args]
                + (["--api-only"] if plan.work else []),
                env=env,
                cwd=root,
                stdout=log,
                stderr=stderr,
            )
        )
        for _ in range(plan.work):
            stack.processes.append(subprocess.Popen([*python, "work"], env=env, cwd=root, stdout=log, stderr=stderr))
        _wait(f"{sandbox}/sandbox/clock", stack.processes[0], where)
        _wait(f"{ledger}/healthz", stack.processes[1], where)
        yield stack
    finally:
        for process in stack.processes:
            process.terminate()
        for process in stack.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if log is not None:
            log.close()


def demo_api_key(database_url: str) -> str:
    """The demo merchant's key: made once, kept in var/ (0600) so restarts print the same one."""
    if KEY_FILE.exists():
        key = KEY_FILE.read_text().strip()
        if parse(key):
            return key
    ledger = open_directory(database_url)
    try:
        key = ApiKeys(ledger).issue_api_key(DIRECT.mchid, "merchant")
    finally:
        ledger.close()
    KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def banner(key: str) -> str:
    ledger, sandbox = f"http://127.0.0.1:{LEDGER_PORT}", f"http://127.0.0.1:{SANDBOX_PORT}"
    return f"""
zhangben is running
  ledger API      {ledger}          (docs: {ledger}/docs, metrics: {ledger}/metrics)
  console         {ledger}/console  (log in with the API key below)
  WeChat sandbox  {sandbox}          (docs/sandbox.md)
  API key         {key}
                  (demo merchant {DIRECT.mchid}, role merchant; kept in {KEY_FILE})

Create an order (Native QR) and print the payer's link, the answer's cashier_url:
  curl -s {ledger}/v1/orders -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
       -d '{{"merchant_order_no": "A1001", "amount_fen": 1000, "description": "奶茶", "channel": "native"}}' \\
       | python3 -c 'import json, sys; print(json.load(sys.stdin)["cashier_url"])'
Open that cashier_url (/pay/<out_trade_no>?t=…, signed for the order) for the PC cashier page: QR code,
countdown, live status; /pay/<out_trade_no> without its t= is a 404.
Pay it in the sandbox (use the code_url or the out_trade_no from the answer):
  curl -s {sandbox}/sandbox/pay -d '{{"code_url": "weixin://wxpay/bizpayurl?pr=..."}}'
Watch it:
  curl -sN {ledger}/v1/orders/A1001/stream -H 'Authorization: Bearer {key}'
The API v2 merchant ({V2.mchid}: XML, MD5, refunds over mutual TLS, printed product codes) uses the same API:
  .venv/bin/zhangben apikey create --merchant {V2.mchid} --role merchant     (README, "API v2 and product codes")

Ctrl-C stops both.
""".rstrip()


def main() -> int:
    """``make serve``: the development set-up in this directory, on the fixed ports."""
    config = Path(os.environ.get("ZHANGBEN_CONFIG", "zhangben.toml"))
    if not config.exists():
        for line in init_keyset(
            Path("var/keys"), config, f"http://127.0.0.1:{LEDGER_PORT}", f"http://127.0.0.1:{SANDBOX_PORT}"
        ):
            print(line)
    os.environ["ZHANGBEN_CONFIG"] = str(config)
    settings = load_settings()
    # A SIGTERM (a process manager, `timeout`) stops both children too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        plan = StackPlan(ledger_port=LEDGER_PORT, sandbox_port=SANDBOX_PORT, config=config, log_path=Path("-"))
        with running_stack(Path.cwd(), settings.database_url, plan) as stack:
            print(banner(demo_api_key(settings.database_url)), flush=True)
            while stack.running():
                time.sleep(0.5)
            return 1
    except StackError as exc:
        print(f"zhangben: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
