"""``make serve``: the whole development set-up in one command.

Creates the keyset and config on first run, starts the WeChat Pay sandbox on
:8900 and the ledger on :8000 (SQLite under ``var/``), and prints what a new
user needs: the URLs, a ready API key for the demo merchant, and the curl
commands to create an order and pay it.  Ctrl-C stops both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sandbox.keyset import DIRECT, init_keyset
from zhangben.apikeys import issue, parse
from zhangben.ledger import open_ledger
from zhangben.settings import load_settings
from zhangben.wiring import init_database

LEDGER_PORT, SANDBOX_PORT = 8000, 8900
KEY_FILE = Path("var/demo-api-key")


def demo_api_key(database_url: str) -> str:
    """The demo merchant's key: made once, kept in var/ (0600) so restarts print the same one."""
    if KEY_FILE.exists():
        key = KEY_FILE.read_text().strip()
        if parse(key):
            return key
    ledger = open_ledger(database_url)
    try:
        key, record = issue(DIRECT.mchid, "merchant", ledger.clock())
        ledger.save(record)
    finally:
        ledger.close()
    KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def wait_for(url: str, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"zhangben: error: the {name} stopped while starting (exit {process.returncode})")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"zhangben: error: the {name} did not answer on {url}")


def banner(key: str) -> str:
    ledger, sandbox = f"http://127.0.0.1:{LEDGER_PORT}", f"http://127.0.0.1:{SANDBOX_PORT}"
    return f"""
zhangben is running
  ledger API      {ledger}          (docs: {ledger}/docs, metrics: {ledger}/metrics)
  WeChat sandbox  {sandbox}          (docs/sandbox.md)
  API key         {key}
                  (demo merchant {DIRECT.mchid}, role merchant; kept in {KEY_FILE})

Create an order (Native QR):
  curl -s {ledger}/v1/orders -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
       -d '{{"merchant_order_no": "A1001", "amount_fen": 1000, "description": "奶茶", "channel": "native"}}'
Show the PC cashier page (QR code, countdown, live status) for the out_trade_no in the answer:
  {ledger}/pay/<out_trade_no>
Pay it in the sandbox (use the code_url or the out_trade_no from the answer):
  curl -s {sandbox}/sandbox/pay -d '{{"code_url": "weixin://wxpay/bizpayurl?pr=..."}}'
Watch it:
  curl -sN {ledger}/v1/orders/A1001/stream -H 'Authorization: Bearer {key}'

Ctrl-C stops both.
""".rstrip()


def main() -> int:
    config = Path(os.environ.get("ZHANGBEN_CONFIG", "zhangben.toml"))
    if not config.exists():
        for line in init_keyset(Path("var/keys"), config, f"http://127.0.0.1:{LEDGER_PORT}",
                                f"http://127.0.0.1:{SANDBOX_PORT}"):
            print(line)
    settings = load_settings()
    init_database(settings)
    key = demo_api_key(settings.database_url)
    python = [sys.executable, "-m", "zhangben.cli"]
    sandbox = subprocess.Popen([*python, "sandbox", "--port", str(SANDBOX_PORT)])
    ledger: subprocess.Popen[bytes] | None = None
    try:
        wait_for(f"http://127.0.0.1:{SANDBOX_PORT}/sandbox/clock", sandbox, "sandbox")
        ledger = subprocess.Popen([*python, "serve", "--port", str(LEDGER_PORT)])
        wait_for(f"http://127.0.0.1:{LEDGER_PORT}/healthz", ledger, "ledger")
        print(banner(key), flush=True)
        while sandbox.poll() is None and ledger.poll() is None:
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        for process in (ledger, sandbox):
            if process is not None and process.poll() is None:
                process.terminate()
        for process in (ledger, sandbox):
            if process is not None:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    sys.exit(main())
