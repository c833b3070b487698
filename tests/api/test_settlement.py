"""What WeChat settles, through the deployment (issue 23, points 4 and 6): both kinds of coupon on v3 and v2, and
the fund flow bill (资金账单) against the journal's WeChat balance.

A 充值券 (CASH) was funded in advance: WeChat settles the whole total.  A 免充值券 (NOCASH, v2 NO_CASH) is the
merchant's own discount: WeChat settles 应结订单金额 = total − coupon, and takes back a refund's 应结退款金额 =
refund − its coupon share.  The day reconciles with no difference, and the journal balances and books exactly
the bill's 应结订单金额 as what WeChat owes.  The day's fund flow bill (v3, and v2 over mutual TLS) agrees with the
journal's WeChat balance; a movement the ledger knows nothing of is the one difference found.
"""

from __future__ import annotations

import io
import time
from datetime import date
from typing import Any

import httpx
from openpyxl import load_workbook

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
        assert "fund flow: " in done.stdout and " movements, closing balance " in done.stdout, done.stdout
        assert done.stdout.count("differences 0") == 2  # the trade bill's and the fund flow's
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


def test_a_fund_flow_day_reconciles_with_the_one_seeded_difference_found(deployment: Deployment) -> None:
    day = sandbox_day(deployment)
    with deployment.client() as http:
        made = http.post(
            "/v1/orders",
            json={"merchant_order_no": "FF-1", "amount_fen": 3000, "description": "资金", "channel": "native"},
        )
        deployment.pay(made.json()["payment"]["out_trade_no"])
        wait(lambda: http.get("/v1/orders/FF-1").json()["status"] == "PAID", "FF-1 paid")
    # WeChat moves 1.23 元 into the balance that is no payment of the ledger's (a 赔付): the one difference
    seeded = httpx.post(
        f"{deployment.sandbox}/sandbox/fund-flow", json={"mchid": DIRECT.mchid, "kind": "赔付", "fen": 123}
    )
    assert seeded.status_code == 200, seeded.text
    to_next_day_ten(deployment, day)
    done = cli(deployment, "reconcile", "--date", day.isoformat(), "--merchant", DIRECT.mchid)
    assert done.returncode == 3, done.stdout + done.stderr  # the fund flow's difference
    assert "matched" in done.stdout and "fund flow:" in done.stdout and "differences 1" in done.stdout
    with httpx.Client(
        base_url=deployment.ledger, headers={"Authorization": f"Bearer {deployment.keys['finance']}"}, timeout=60
    ) as fin:
        report = fin.get("/v1/finance/fund-flow", params={"date": day.isoformat()}).json()
        assert [(d["kind"], d["wechat_fen"], d["journal_fen"]) for d in report["differences"]] == [("other", 123, 0)]
        assert report["wechat"]["closing_fen"] - report["journal"]["closing_fen"] == 123
        assert report["wechat"]["income_fen"] == report["journal"]["income_fen"] >= 3000
        sheet = fin.get("/v1/finance/reconciliation", params={"date": day.isoformat(), "format": "xlsx"})
        book = load_workbook(io.BytesIO(sheet.content))
        header, *rows = [[c.value for c in row] for row in book["资金账单"].iter_rows()]
        other = next(dict(zip(header, r, strict=True)) for r in rows if "其他资金变动" in r)
        assert (other["资金账单(元)"], other["账本（微信支付待结算）(元)"], other["差额(元)"]) == (1.23, 0, 1.23), other
        assert "赔付" in other["结果"]
        assert fin.get("/v1/finance/fund-flow", params={"date": "2001-01-01"}).status_code == 404
    with httpx.Client(base_url=deployment.ledger, follow_redirects=True) as console:
        console.post("/console/login", data={"key": deployment.keys["finance"]})
        page = console.get("/console/reconciliation", params={"date": day.isoformat()}).text
        assert 'id="fund-diff-other"' in page and "账本没有的资金变动" in page
    metrics = httpx.get(f"{deployment.ledger}/metrics").text
    assert f'zhangben_fund_flow_differences{{date="{day.isoformat()}",mchid="{DIRECT.mchid}"}} 1.0' in metrics
