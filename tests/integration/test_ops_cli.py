"""``zhangben projections status|rebuild`` and ``zhangben scheduler status`` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from application.orders import Orders
from bootstrap.ledger import open_ledger
from domain.notices import TransactionNotice
from domain.requests import OrderTerms


def zhangben(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zhangben.cli", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_projection_and_scheduler_commands(keyset: Path, tmp_path: Path) -> None:
    env = {"ZHANGBEN_CONFIG": str(keyset / "zhangben.toml"), "ZHANGBEN_DATABASE_URL": f"sqlite:///{tmp_path}/l.db"}
    assert zhangben("db", "init", env=env, cwd=tmp_path).returncode == 0
    ledger = open_ledger(env["ZHANGBEN_DATABASE_URL"])
    for i in range(3):
        _, payment = Orders(ledger).create_order("1900000001", f"OPS-{i}", OrderTerms(100, "tea", "native"))
        Orders(ledger).record_payment_success(
            TransactionNotice.paid(payment.out_trade_no, f"42OPS{i}", 100, datetime.now(UTC), payer_total_fen=100),
            "query",
        )
    head = ledger.recorder.max_notification_id()
    ledger.close()

    status = zhangben("projections", "status", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert f"event log head: {head}" in status.stdout
    assert any(line.split()[:3] == ["journal", "0", str(head)] for line in status.stdout.splitlines())

    rebuild = zhangben("projections", "rebuild", env=env, cwd=tmp_path)
    assert rebuild.returncode == 0, rebuild.stderr
    assert (
        f"order_status: replayed {head} events" in rebuild.stdout
        and f"journal: replayed {head} events" in rebuild.stdout
    )
    after = zhangben("projections", "status", env=env, cwd=tmp_path).stdout
    assert any(line.split()[:3] == ["journal", str(head), "0"] for line in after.splitlines())

    jobs = zhangben("scheduler", "status", env=env, cwd=tmp_path)
    assert jobs.returncode == 0, jobs.stderr
    for name in ("compensating_query", "expiry", "refund_follow_up", "daily_bill", "certificates"):
        assert name in jobs.stdout

    wrong = zhangben("projections", "rebuild", "ledger_of_doom", env=env, cwd=tmp_path)
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr
    bad_date = zhangben(
        "export", "journal", "--date", "yesterday", "--format", "csv", "--out", "j.csv", env=env, cwd=tmp_path
    )
    assert bad_date.returncode == 2 and bad_date.stderr.strip().startswith("zhangben: error: --date")
