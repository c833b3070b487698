"""The ``zhangben`` command as a user runs it: a real process, both stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bootstrap.ledger import open_ledger

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


def test_history_of_a_paid_and_partially_refunded_order(database_url: str, tmp_path: Path) -> None:
    env = {"ZHANGBEN_DATABASE_URL": database_url, "ZHANGBEN_CONFIG": str(tmp_path / "zhangben.toml")}
    (tmp_path / "zhangben.toml").write_text(f'[[merchants]]\nmchid = "{MCHID}"\nappid = "wx1"\n')
    init = zhangben("db", "init", env=env, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert "***" in init.stdout or "sqlite" in init.stdout
    assert "test-only-password" not in init.stdout

    ledger = open_ledger(database_url)
    _, payment = ledger.create_order(MCHID, "CLI-1", 1000, "奶茶", "native")
    ledger.record_prepay(payment.out_trade_no, code_url="weixin://wxpay/bizpayurl?pr=x")
    ledger.record_payment_success(payment.out_trade_no, "4200009999", 1000, 1000, datetime.now(UTC), "notification")
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    ledger.request_refund(MCHID, "CLI-1", "CLI-R1", 250, "少糖")
    ledger.record_refund_result(MCHID, "CLI-R1", "SUCCESS", "50300001")
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
        (["db", "init"], {"ZHANGBEN_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:9/db"}, "cannot reach database"),
        (["history", "X"], {"ZHANGBEN_CONFIG": "/nonexistent/zhangben.toml"}, "does not exist"),
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
