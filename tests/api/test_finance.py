"""Reconciliation against the sandbox's bill, and the finance endpoints, through the real deployment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from openpyxl import load_workbook

from sandbox.keyset import DIRECT, PUBLIC_KEY_ID
from tests.deploy import Deployment
from tests.spec_merchant import SpecMerchant
from tests.spec_wechat import SpecWechat, paid_resource


def cli(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ZHANGBEN_CONFIG": str(deployment.root / "zhangben.toml"),
        "ZHANGBEN_DATABASE_URL": deployment.database_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "zhangben.cli", *args],
        env=env,
        cwd=deployment.root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def sandbox_day(deployment: Deployment) -> date:
    return date.fromisoformat(httpx.get(f"{deployment.sandbox}/sandbox/clock").json()["beijing_date"])


def to_next_day_ten(deployment: Deployment, day: date) -> None:
    now = datetime.fromisoformat(httpx.get(f"{deployment.sandbox}/sandbox/clock").json()["now"])
    target = datetime.combine(day + timedelta(days=1), datetime.min.time(), now.tzinfo) + timedelta(hours=10, minutes=1)
    if target > now:
        httpx.post(f"{deployment.sandbox}/sandbox/clock", json={"advance_seconds": (target - now).total_seconds()})


def order(deployment: Deployment, no: str, amount: int) -> str:
    with deployment.client() as http:
        created = http.post(
            "/v1/orders",
            json={"merchant_order_no": no, "amount_fen": amount, "description": "对账", "channel": "native"},
        )
        assert created.status_code == 201, created.text
        return created.json()["payment"]["out_trade_no"]


def wait(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def status(deployment: Deployment, no: str) -> str:
    with deployment.client() as http:
        return http.get(f"/v1/orders/{no}").json()["status"]


def test_a_day_reconciles_then_each_difference_is_found(deployment: Deployment) -> None:
    # a day with payments, a partial refund and a full refund: the bill matches the ledger exactly
    day = sandbox_day(deployment)
    with deployment.client() as http:
        for no, amount in (("REC-1", 6000), ("REC-2", 1300), ("REC-3", 990)):
            deployment.pay(order(deployment, no, amount))
            wait(lambda no=no: status(deployment, no) == "PAID")
        assert (
            http.post("/v1/orders/REC-1/refunds", json={"out_refund_no": "REC-1-R", "amount_fen": 2000}).status_code
            == 202
        )
        assert (
            http.post("/v1/orders/REC-3/refunds", json={"out_refund_no": "REC-3-R", "amount_fen": 990}).status_code
            == 202
        )
        wait(lambda: status(deployment, "REC-1") == "PARTIALLY_REFUNDED" and status(deployment, "REC-3") == "REFUNDED")
        # a payer with a 5 元 coupon (代金券): WeChat settles the whole 25 元, the payer paid 20 元
        deployment.pay(order(deployment, "REC-4", 2500), payer_total_fen=2000)
        wait(lambda: status(deployment, "REC-4") == "PAID")
        coupon = http.get("/v1/orders/REC-4").json()
        assert (coupon["paid_fen"], coupon["payer_total_fen"], coupon["payments"][0]["payer_total_fen"]) == (
            2500,
            2000,
            2000,
        )
        assert http.get("/v1/orders/REC-2").json()["payer_total_fen"] == 1300  # no coupon: all of it
    to_next_day_ten(deployment, day)
    result = cli(deployment, "reconcile", "--date", day.isoformat(), "--merchant", DIRECT.mchid)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "differences 0" in result.stdout and "6 bill lines" in result.stdout

    with httpx.Client(
        base_url=deployment.ledger, headers={"Authorization": f"Bearer {deployment.keys['finance']}"}
    ) as fin:
        report = fin.get("/v1/finance/reconciliation", params={"date": day.isoformat()}).json()
        assert (report["matched"], report["differences"]) == (6, [])
        journal = fin.get(
            "/v1/finance/journal", params={"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
        ).json()
        balance = journal["trial_balance"]
        assert balance["debit_fen"] == balance["credit_fen"]
        assert (
            balance["accounts"]["wechat_clearing"]["debit_fen"] == balance["accounts"]["wechat_clearing"]["credit_fen"]
        )
        bank = balance["accounts"]["bank"]["debit_fen"]
        fees = balance["accounts"]["wechat_fees"]["debit_fen"]
        assert bank + fees == 6000 + 1300 + 990 + 2500 - 2000 - 990
        notes = {line["reference"]: line["note"] for line in journal["lines"] if line["account"] == "merchant_sales"}
        assert set(notes.values()) == {"", "payer paid 2000 fen, coupon 500 fen"}
        csv_file = fin.get(
            "/v1/finance/journal", params={"from": day.isoformat(), "to": day.isoformat(), "format": "csv"}
        )
        assert csv_file.content.startswith("\ufeff".encode()) and b"merchant_sales" in csv_file.content
        assert fin.get("/v1/finance/reconciliation", params={"date": "2001-01-01"}).status_code == 404
    with deployment.client() as merchant:
        assert merchant.get("/v1/finance/reconciliation", params={"date": day.isoformat()}).status_code == 403

    export = deployment.root / "r.xlsx"
    assert (
        cli(
            deployment,
            "export",
            "journal",
            "--date",
            day.isoformat(),
            "--format",
            "xlsx",
            "--out",
            str(export),
            "--merchant",
            DIRECT.mchid,
        ).returncode
        == 0
    )
    rows = list(load_workbook(export).active.values)
    assert rows[0][:3] == ("mchid", "date", "account") and len(rows) > 10
    orders = deployment.root / "orders.xlsx"
    done = cli(deployment, "export", "orders", "--date", day.isoformat(), "--format", "xlsx", "--out", str(orders))
    assert done.returncode == 0, done.stderr
    table = list(load_workbook(orders).active.values)
    by_no = {row[1]: dict(zip(table[0], row, strict=True)) for row in table[1:]}
    assert (by_no["REC-4"]["paid_fen"], by_no["REC-4"]["payer_total_fen"]) == (2500, 2000)


def test_every_kind_of_difference(deployment: Deployment) -> None:
    day = sandbox_day(deployment)
    keys = deployment.root / "keys"
    wechat = SpecWechat.from_keyset(keys, DIRECT.mchid, PUBLIC_KEY_ID)
    stranger = SpecMerchant.from_files(deployment.sandbox, keys, DIRECT.mchid, PUBLIC_KEY_ID)
    deployment.faults(notifications="drop")
    try:
        # missing_in_ledger, healed: WeChat took it, the notification never came; the query heals it
        heal = order(deployment, "DIF-HEAL", 500)
        deployment.pay(heal)
        # missing_in_ledger, for a person: an order the ledger never made (paid at WeChat directly)
        stranger.call(
            "POST",
            "/v3/pay/transactions/native",
            {
                "appid": DIRECT.appid,
                "mchid": DIRECT.mchid,
                "description": "x",
                "out_trade_no": "STRANGER001",
                "notify_url": "https://m.example/n",
                "amount": {"total": 700},
            },
        )
        deployment.pay("STRANGER001")
        # missing_in_bill: the ledger was told of a payment WeChat never made
        ghost = order(deployment, "DIF-GHOST", 800)
        on_the_day = f"{day.isoformat()}T12:00:00+08:00"
        body = wechat.body(
            "TRANSACTION.SUCCESS",
            paid_resource(DIRECT.mchid, DIRECT.appid, ghost, 800, "4200000000000000000000000099", on_the_day),
        )
        assert (
            httpx.post(
                deployment.ledger + "/wechatpay/v3/notify", content=body, headers=wechat.headers(body)
            ).status_code
            == 204
        )
        # amount_mismatch: the ledger recorded another amount for WeChat's transaction
        odd = order(deployment, "DIF-AMT", 900)
        paid = deployment.pay(odd)
        body = wechat.body(
            "TRANSACTION.SUCCESS",
            paid_resource(DIRECT.mchid, DIRECT.appid, odd, 899, paid["transaction_id"], paid["success_time"]),
        )
        assert (
            httpx.post(
                deployment.ledger + "/wechatpay/v3/notify", content=body, headers=wechat.headers(body)
            ).status_code
            == 204
        )
        # status_mismatch: WeChat finished the refund, the ledger has not heard
        refunded = order(deployment, "DIF-REF", 600)
        deployment.pay(refunded)
        with deployment.client() as http:
            http.post("/v1/orders/DIF-REF/sync")
            assert (
                http.post(
                    "/v1/orders/DIF-REF/refunds", json={"out_refund_no": "DIF-REF-R", "amount_fen": 600}
                ).status_code
                == 202
            )
        time.sleep(1.5)  # the sandbox finishes the refund; its notification is dropped
    finally:
        deployment.faults(reset=True)
    to_next_day_ten(deployment, day)
    with httpx.Client(
        base_url=deployment.ledger, headers={"Authorization": f"Bearer {deployment.keys['finance']}"}, timeout=60
    ) as fin:
        report = fin.post(f"/v1/finance/bills/{day.isoformat()}/import").json()
    found = {(d["kind"], d["out_trade_no"]) for d in report["found"]}
    assert ("missing_in_ledger", heal) in found
    assert ("missing_in_ledger", "STRANGER001") in found
    assert ("missing_in_bill", ghost) in found
    assert ("amount_mismatch", odd) in found
    assert ("status_mismatch", refunded) in found
    # the ledger healed what WeChat could tell it about; the rest waits for a person
    assert heal in report["healed"] and "DIF-REF-R" in report["healed"]
    left = {(d["kind"], d["out_trade_no"]) for d in report["differences"]}
    assert left == {("missing_in_ledger", "STRANGER001"), ("missing_in_bill", ghost), ("amount_mismatch", odd)}
    assert status(deployment, "DIF-HEAL") == "PAID"
    # re-importing the same day replaces, never duplicates
    again = cli(deployment, "reconcile", "--date", day.isoformat(), "--merchant", DIRECT.mchid)
    assert again.returncode == 3 and "differences 3" in again.stdout
