"""``zhangben keys init && zhangben sandbox`` as a new user runs them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sandbox.keyset import DIRECT, PUBLIC_KEY_ID
from tests.fixtures_sandbox import free_port
from tests.spec_merchant import SpecMerchant


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zhangben.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_keys_init_then_sandbox(tmp_path: Path) -> None:
    init = run("keys", "init", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert "wrote zhangben.toml" in init.stdout
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "zhangben.cli", "sandbox", "--port", str(port), "--tls-port", str(free_port())],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/sandbox/clock", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, "sandbox did not start"
                time.sleep(0.1)
        merchant = SpecMerchant.from_files(url, tmp_path / "var" / "keys", DIRECT.mchid, PUBLIC_KEY_ID)
        merchant.send_serial = PUBLIC_KEY_ID
        body = {
            "appid": DIRECT.appid,
            "mchid": DIRECT.mchid,
            "description": "t",
            "out_trade_no": "CLI0000001",
            "notify_url": "http://127.0.0.1:9/notify",
            "amount": {"total": 1},
        }
        answer = merchant.call("POST", "/v3/pay/transactions/native", body)
        assert answer.status_code == 200 and merchant.verified(answer)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert "WeChat Pay sandbox on" in output
    assert "POST /v3/pay/transactions/native 200" in output  # one line per request
    assert (tmp_path / "var" / "sandbox.db").exists()


def test_sandbox_without_a_keyset_is_a_one_line_error(tmp_path: Path) -> None:
    result = run("sandbox", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "zhangben: error: zhangben.toml not found: run `zhangben keys init` first"


def test_a_tls_port_in_use_is_one_line(tmp_path: Path) -> None:
    assert run("keys", "init", cwd=tmp_path).returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = run("sandbox", "--port", str(free_port()), "--tls-port", str(taken), cwd=tmp_path)
    assert result.returncode != 0
    assert "mutual-TLS listener could not start" in result.stderr and "Traceback" not in result.stderr
