"""The ``zhangben`` command as a user runs it: a real process, both stores."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest.mock import patch

import httpx
import pytest

from adapters.wechatpay.client import PrepayResult
from application.apikeys import issue
from application.orders import Orders
from application.refunds import Refunds
from bootstrap.ledger import open_ledger
from domain.notices import RefundNotice, TransactionNotice
from domain.requests import NewRefund, OrderTerms
from sandbox.keyset import init_keyset
from zhangben.cli import main
from zhangben.launch import StackError, StackPlan, free_port, running_stack

MCHID = "1900000001"


def zhangben(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zhangben.cli", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def in_process(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``zhangben …`` through ``zhangben.cli.main`` in this process: its exit code and both streams."""
    out, err = io.StringIO(), io.StringIO()
    with (
        patch.dict(os.environ, env),
        contextlib.chdir(cwd),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def test_history_of_a_paid_and_partially_refunded_order(database_url: str, tmp_path: Path) -> None:
    env = {"ZHANGBEN_DATABASE_URL": database_url, "ZHANGBEN_CONFIG": str(tmp_path / "zhangben.toml")}
    (tmp_path / "zhangben.toml").write_text(f'[[merchants]]\nmchid = "{MCHID}"\nappid = "wx1"\n')
    init = zhangben("db", "init", env=env, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert "***" in init.stdout or "sqlite" in init.stdout
    assert "test-only-password" not in init.stdout

    ledger = open_ledger(database_url)
    _, payment = Orders(ledger).create_order(MCHID, "CLI-1", OrderTerms(1000, "奶茶", "native"))
    Orders(ledger).record_prepay(payment, PrepayResult(code_url="weixin://wxpay/bizpayurl?pr=x"))
    Orders(ledger).record_payment_success(
        TransactionNotice.paid(payment.out_trade_no, "4200009999", 1000, datetime.now(UTC), payer_total_fen=1000),
        "notification",
    )
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    Refunds(ledger).request_refund(NewRefund(MCHID, "CLI-1", "CLI-R1", 250, "少糖"))
    Refunds(ledger).record_refund_result(
        MCHID, RefundNotice(out_refund_no="CLI-R1", status="SUCCESS", refund_id="50300001")
    )
    ledger.close()

    table = zhangben("history", "CLI-1", env=env, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "status PARTIALLY_REFUNDED  amount 1000 fen  paid 1000 fen  refunded 250 fen" in table.stdout
    for word in ("Created", "AttemptStarted", "Prepaid", "Paid", "RefundRequested", "Succeeded", "Refunded"):
        assert word in table.stdout
    assert "transaction_id=4200009999" in table.stdout

    as_json = zhangben("history", "CLI-1", "--merchant", MCHID, "--json", env=env, cwd=tmp_path)
    payload = json.loads(as_json.stdout)
    assert [e["type"] for e in payload["events"]][-1] == "Refunded"
    assert payload["state"]["refunded_fen"] == 250

    past = zhangben("history", "CLI-1", "--json", "--as-of", between.isoformat(), env=env, cwd=tmp_path)
    payload = json.loads(past.stdout)
    assert payload["state"]["status"] == "PAID" and payload["state"]["refunded_fen"] == 0
    assert "RefundRequested" not in [e["type"] for e in payload["events"]]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["history", "NOPE", "--merchant", MCHID], {}, "order 'NOPE' not found"),
        (["history", "X", "--merchant", MCHID, "--as-of", "last tuesday"], {}, "not an ISO 8601"),
        (["db", "init"], {"ZHANGBEN_DATABASE_URL": "mysql://u:hunter2@h/db"}, "unsupported database URL"),
        (["db", "init"], {"ZHANGBEN_DATABASE_URL": "postgres://u:hunter2@[::1:bad/x"}, "malformed database URL"),
        (["db", "init"], {"ZHANGBEN_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:9/db"}, "cannot reach database"),
        (["history", "X"], {"ZHANGBEN_CONFIG": "/nonexistent/zhangben.toml"}, "does not exist"),
        (["apikey", "create", "--role", "merchant"], {}, "--merchant is needed"),
        (["apikey", "create", "--role", "operator", "--merchant", MCHID], {}, "names no merchant"),
    ],
)
def test_user_mistakes_are_one_line_errors(args: list[str], env: dict[str, str], message: str, tmp_path: Path) -> None:
    base = {"ZHANGBEN_DATABASE_URL": f"sqlite:///{tmp_path}/l.db"}
    zhangben("db", "init", env=base, cwd=tmp_path)
    result = zhangben(*args, env=base | env, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_version_and_a_closed_pipe(tmp_path: Path) -> None:
    version = zhangben("--version", env={}, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("zhangben ")
    env = {**os.environ, "ZHANGBEN_DATABASE_URL": f"sqlite:///{tmp_path}/l.db"}
    zhangben("db", "init", env=env, cwd=tmp_path)
    ledger = open_ledger(env["ZHANGBEN_DATABASE_URL"])
    now = datetime.now(UTC)  # 300 KB of `apikey list`: far more than a pipe holds (64 KiB); saved in one go
    ledger.save(*(issue(MCHID, "merchant", now)[1] for _ in range(3000)))
    ledger.close()
    # `zhangben apikey list | head -1`: the reader stops after one line
    writer = subprocess.Popen(
        [sys.executable, "-m", "zhangben.cli", "apikey", "list"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert writer.stdout is not None and writer.stderr is not None
    reader = subprocess.run(["head", "-1"], stdin=writer.stdout, capture_output=True, text=True, timeout=60)
    writer.stdout.close()  # only the reader holds the pipe now
    errors = writer.stderr.read().decode()
    assert writer.wait(timeout=60) in (0, 141) and "key id" in reader.stdout  # quiet, whichever notices first
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors


def test_read_commands_never_create_a_database(tmp_path: Path) -> None:
    init_keyset(tmp_path / "keys", tmp_path / "zhangben.toml", "http://127.0.0.1:1", "http://127.0.0.1:2")
    missing = tmp_path / "typo" / "ledgr.db"
    env = {"ZHANGBEN_DATABASE_URL": f"sqlite:///{missing}", "ZHANGBEN_CONFIG": str(tmp_path / "zhangben.toml")}
    for args in (
        ["history", "A1", "--merchant", MCHID],
        ["apikey", "list"],
        ["projections", "status"],
        ["scheduler", "status"],
        ["export", "orders", "--date", "2026-11-22", "--out", str(tmp_path / "o.xlsx")],
        ["webhooks", "list", "--merchant", MCHID],
    ):  # in this process (the CLI as a process of its own is the other tests' here): seconds of imports saved
        result = in_process(*args, env=env, cwd=tmp_path)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert (
            result.stderr.strip()
            == f"zhangben: error: database sqlite:///{missing} does not exist: check the URL, or run `zhangben db init`"
        )
        assert not missing.exists() and not missing.parent.exists(), args
    assert zhangben("db", "init", env=env, cwd=tmp_path).returncode == 0 and missing.exists()


def test_long_running_processes_log_json_and_an_idle_scheduler_is_quiet(tmp_path: Path) -> None:
    sandbox_port = free_port()
    init_keyset(tmp_path / "keys", tmp_path / "zhangben.toml", "http://127.0.0.1:1", f"http://127.0.0.1:{sandbox_port}")
    env = {
        **os.environ,
        "ZHANGBEN_CONFIG": str(tmp_path / "zhangben.toml"),
        "ZHANGBEN_DATABASE_URL": f"sqlite:///{tmp_path}/l.db",
    }
    assert zhangben("db", "init", env=env, cwd=tmp_path).returncode == 0
    runs = {
        "sandbox": [
            sys.executable,
            "-m",
            "zhangben.cli",
            "sandbox",
            "--port",
            str(sandbox_port),
            "--tls-port",
            str(free_port()),
        ],
        "scheduler": [sys.executable, "-m", "zhangben.cli", "scheduler", "run", "--tick", "0.5"],
    }
    # an idle deployment: no merchant configured, so no bill to fetch whatever the hour (from 10:00 Beijing time
    # the daily bill job would otherwise ask WeChat for yesterday's bills)
    idle = tmp_path / "idle.toml"
    idle.write_text("# a deployment with nothing to do\n", encoding="utf-8")
    logs = {}
    for name, command in runs.items():
        process = subprocess.Popen(
            command,
            env=env | ({"ZHANGBEN_CONFIG": str(idle)} if name == "scheduler" else {}),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(4)
        if name == "sandbox":  # a request, so the sandbox logs something
            httpx.get(f"http://127.0.0.1:{sandbox_port}/sandbox/clock", timeout=5)
            time.sleep(0.5)
        process.terminate()
        _, logs[name] = process.communicate(timeout=20)
    for name, text in logs.items():
        lines = [line for line in text.splitlines() if line.strip()]
        assert all(json.loads(line)["level"] for line in lines), (name, text[-2000:])
    assert logs["sandbox"].strip(), "the sandbox logged its request"
    scheduler = [json.loads(line) for line in logs["scheduler"].splitlines() if line.strip()]
    # eight ticks in four seconds, every job run once (nothing to do): not one INFO line about it
    assert not [entry for entry in scheduler if entry["level"] == "info"], scheduler


def test_a_taken_port_is_said_before_anything_starts(tmp_path: Path) -> None:
    """`make serve` beside another instance: one clear line, not the banner of the other one."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        with (
            pytest.raises(StackError, match=f"port {taken} for the ledger is already in use"),
            running_stack(tmp_path, f"sqlite:///{tmp_path}/l.db", StackPlan(ledger_port=taken)),
        ):
            pass
    assert not (tmp_path / "l.db").exists()  # nothing was started or created


def test_make_serve_prints_a_console_key_that_logs_in(tmp_path: Path) -> None:
    """`make serve`'s banner names the console and a key; that key opens it."""
    env = {**os.environ, "ZHANGBEN_DATABASE_URL": f"sqlite:///{tmp_path}/var/zhangben.db"}
    env.pop("ZHANGBEN_CONFIG", None)
    serve = subprocess.Popen(
        [sys.executable, "-m", "zhangben.launch"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert serve.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any("Ctrl-C stops both" in line for line in lines):
            assert time.monotonic() < deadline and serve.poll() is None, "".join(lines)
            lines.append(serve.stdout.readline())
        text = "".join(lines)
        console = re.search(r"console\s+(http://\S+/console)", text)
        key = re.search(r"API key\s+(zb_\S+)", text)
        assert console and key, text
        with httpx.Client(follow_redirects=False) as http:
            logged = http.post(console.group(1) + "/login", data={"key": key.group(1)})
            assert logged.status_code == 303 and logged.headers["location"] == "/console"
            assert http.get(console.group(1)).status_code == 200
        # the banner's own create command, as a newcomer pastes it: it prints the cashier_url, and that page opens
        command = text[text.index("curl -s http://127.0.0.1") : text.index("Open that cashier_url")]
        printed = subprocess.run(["sh", "-c", command.replace("\\\n", " ")], capture_output=True, text=True, timeout=30)
        link = printed.stdout.strip()
        assert link.startswith("http://127.0.0.1") and "/pay/" in link and "?t=" in link, printed
        page = httpx.get(link)
        assert page.status_code == 200 and "奶茶" in page.text
        assert httpx.get(link.split("?")[0]).status_code == 404  # the bare /pay/<out_trade_no> opens nothing
    finally:
        serve.terminate()
        serve.wait(30)
