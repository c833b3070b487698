"""Both kinds of coupon on v3 and v2, through the deployment (issue 23, point 4).

A 充值券 (CASH) was funded in advance: WeChat settles the whole total.  A 免充值券 (NOCASH, v2 NO_CASH) is the
merchant's own discount: WeChat settles 应结订单金额 = total − coupon, and takes back a refund's 应结退款金额 =
refund − its coupon share.  The day reconciles with no difference, and the journal balances and books exactly
the bill's 应结订单金额 as what WeChat owes.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import httpx

from sandbox.keyset import DIRECT, V2
from tests.api.test_finance import cli, sandbox_day, to_next_day_ten
from tests.deploy import Deployment

# (order, merchant's key, amount, coupon kind, coupon fen, refund fen)
ORDERS = [
    ("CP-V3-N", "merchant", 1000, "NOCASH", 300, 500),
    ("CP-V3-C", "merchant", 1000, "CASH", 200, 1000),
    ("CP-V2-N", "v2", 2000, "NOCASH", 500, 2000),
    ("CP-V2-C", "v2", 2000, "CASH", 100, 0),
]


def wait(check: Any, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def pay_with_coupons(deployment: Deployment) -> None:
    for no, key, amount, kind, coupon, refund in ORDERS:
        with deployment.client(key) as http:
            made = http.post(
                "/v1/orders",
                json={"merchant_order_no": no, "amount_fen": amount, "description": "券", "channel": "native"},
            )
            assert made.status_code == 201, made.text
            deployment.pay(made.json()["payment"]["out_trade_no"], coupon={"type": kind, "amount_fen": coupon})
            wait(lambda http=http, no=no: http.get(f"/v1/orders/{no}").json()["status"] == "PAID", f"{no} paid")
            view = http.get(f"/v1/orders/{no}").json()
            settles = amount - (coupon if kind == "NOCASH" else 0)
            assert (view["paid_fen"], view["payer_total_fen"], view["coupon_fen"], view["settlement_fen"]) == (
                amount,
                amount - coupon,
                coupon,
                settles,
            ), view
            if refund:
                asked = http.post(f"/v1/orders/{no}/refunds", json={"out_refund_no": f"{no}-R", "amount_fen": refund})
                assert asked.status_code == 202, asked.text
                wait(lambda http=http, no=no: http.get(f"/v1/refunds/{no}-R").json()["status"] == "SUCCESS", f"{no}-R")


def test_both_coupon_kinds_on_v3_and_v2_reconcile_to_zero_and_the_journal_books_what_wechat_settles(
    deployment: Deployment,
) -> None:
    day = sandbox_day(deployment)
    pay_with_coupons(deployment)
    to_next_day_ten(deployment, day)
    for mchid in (DIRECT.mchid, V2.mchid):
        done = cli(deployment, "reconcile", "--date", day.isoformat(), "--merchant", mchid)
        assert done.returncode == 0 and "differences 0" in done.stdout, done.stdout + done.stderr
    finance = {DIRECT.mchid: deployment.keys["finance"]}
    finance[V2.mchid] = deployment.cli("apikey", "create", "--merchant", V2.mchid, "--role", "finance")
    expected = {  # 应结订单金额 of the day's sales, and the 免充值券 given then partly taken back by refunds
        DIRECT.mchid: {"settled": 700 + 1000, "discount": 300, "discount_back": 150},
        V2.mchid: {"settled": 1500 + 2000, "discount": 500, "discount_back": 500},
    }
    for mchid, key in finance.items():
        check_books(deployment, key, day, expected[mchid])


def check_books(deployment: Deployment, key: str, day: date, expected: dict[str, int]) -> None:
    with httpx.Client(base_url=deployment.ledger, headers={"Authorization": f"Bearer {key}"}, timeout=60) as fin:
        report = fin.post(f"/v1/finance/bills/{day.isoformat()}/import").json()
        assert report["differences_total"] == 0 and report["found"] == [], report
        assert report["imported"]["settled_fen"] == expected["settled"]  # the bill's 应结订单总金额
        journal = fin.get("/v1/finance/journal", params={"from": day.isoformat(), "to": day.isoformat()}).json()
    balance = journal["trial_balance"]
    assert balance["debit_fen"] == balance["credit_fen"]
    sales = {line["reference"] for line in journal["lines"] if line["account"] == "merchant_sales"}
    owed = sum(
        line["debit_fen"]
        for line in journal["lines"]
        if line["account"] == "wechat_clearing" and line["reference"] in sales
    )
    assert owed == report["imported"]["settled_fen"]  # what WeChat owes for the sales is the bill's 应结订单金额
    discounts = balance["accounts"]["merchant_discounts"]
    assert (discounts["debit_fen"], discounts["credit_fen"]) == (expected["discount"], expected["discount_back"])
