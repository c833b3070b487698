"""API v2 merchants through the real service: the same /v1 API, v2 callbacks from an independent WeChat, mode 1."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import httpx

from application.audit import Audit
from bootstrap.ledger import open_ledger
from sandbox.keyset import V2, V2_PARTNER
from tests.deploy import Deployment
from tests.spec_v2 import SpecV2Wechat, parse, read_key, sign

V2_NOTIFY, V2_REFUND_NOTIFY = "/wechatpay/v2/notify", "/wechatpay/v2/refund-notify"


def _wechat(d: Deployment, who: Any = V2) -> SpecV2Wechat:
    partner = {"sub_mch_id": who.sub_mchid, "sub_appid": who.sub_appid} if who.mode == "partner" else {}
    return SpecV2Wechat(who.mchid, who.appid, read_key(d.root / "keys", who.mchid), who.v2_sign_type, partner)


def _create(d: Deployment, no: str, role: str = "v2", **body: Any) -> dict[str, Any]:
    with d.client(role) as http:
        answer = http.post(
            "/v1/orders",
            json={"merchant_order_no": no, "amount_fen": 100, "description": "茶", "channel": "native"} | body,
        )
    assert answer.status_code == 201, answer.text
    return answer.json()


def _refused(d: Deployment) -> int:
    ledger = open_ledger(d.database_url)
    try:
        return len(Audit(ledger).refused_callbacks())
    finally:
        ledger.close()


def _history(d: Deployment, mchid: str, no: str) -> list[dict[str, Any]]:
    key = d.cli("apikey", "create", "--merchant", mchid, "--role", "auditor")
    with httpx.Client(base_url=d.ledger, headers={"Authorization": f"Bearer {key}"}) as http:
        answer = http.get(f"/v1/audit/orders/{no}/history")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["events"])


def test_a_v2_miniprogram_order_paid_with_an_md5_pay_sign(deployment: Deployment) -> None:
    order = _create(deployment, "V2-MINI-1", channel="miniprogram", payer_openid="oMini1")
    params = order["payment"]["pay_params"]
    assert params["signType"] == "MD5" and params["appId"] == V2.appid
    key = read_key(deployment.root / "keys", V2.mchid)
    assert sign({k: v for k, v in params.items() if k != "paySign"}, key, "MD5") == params["paySign"]
    deployment.pay(order["payment"]["out_trade_no"])
    view = deployment.wait_status("V2-MINI-1", "PAID", role="v2")
    assert view["paid_fen"] == 100
    kept = [e for e in _history(deployment, V2.mchid, "V2-MINI-1") if e["type"] == "Notified"]
    assert kept and kept[0]["data"]["body"].startswith("<xml>")  # the raw XML, kept for audit
    assert kept[0]["data"]["event_type"] == "TRANSACTION.SUCCESS"


def test_a_v2_refund_goes_over_mutual_tls_and_its_req_info_settles_it(deployment: Deployment) -> None:
    order = _create(deployment, "V2-REF-1", amount_fen=500)
    deployment.pay(order["payment"]["out_trade_no"])
    deployment.wait_status("V2-REF-1", "PAID", role="v2")
    with deployment.client("v2") as http:
        refund = http.post("/v1/orders/V2-REF-1/refunds", json={"out_refund_no": "V2-REF-1-A", "amount_fen": 200})
        assert refund.status_code == 202, refund.text
        assert refund.json()["status"] == "PROCESSING" and refund.json()["refund_id"]
        deadline = time.monotonic() + 10
        while http.get("/v1/refunds/V2-REF-1-A").json()["status"] != "SUCCESS":
            assert time.monotonic() < deadline, "the v2 refund notification did not settle the refund"
            time.sleep(0.1)
    deployment.wait_status("V2-REF-1", "PARTIALLY_REFUNDED", role="v2")


def test_v2_and_v3_merchants_side_by_side(deployment: Deployment) -> None:
    v3 = _create(deployment, "SIDE-1", role="merchant")
    v2 = _create(deployment, "SIDE-1", role="v2", amount_fen=300)
    assert v3["payment"]["code_url"].startswith("weixin://") and v2["payment"]["code_url"].startswith("weixin://")
    deployment.pay(v3["payment"]["out_trade_no"])
    deployment.pay(v2["payment"]["out_trade_no"])
    assert deployment.wait_status("SIDE-1", "PAID")["amount_fen"] == 100
    assert deployment.wait_status("SIDE-1", "PAID", role="v2")["amount_fen"] == 300
    with deployment.client("v2") as http:
        assert http.get("/v1/orders/V2-MINI-1").status_code in (200, 404)
        own = {o["merchant_order_no"] for o in http.get("/v1/orders", params={"limit": 100}).json()["orders"]}
    assert "SIDE-1" in own
    with deployment.client() as http:
        assert http.get("/v1/orders/V2-REF-1").status_code == 404  # the v2 merchant's order is not the v3 one's


def test_a_v2_service_provider_sub_merchant(deployment: Deployment) -> None:
    order = _create(deployment, "V2P-1", role="v2_partner", channel="jsapi", payer_openid="oSubPayer")
    params = order["payment"]["pay_params"]
    assert params["signType"] == "HMAC-SHA256" and params["appId"] == V2_PARTNER.sub_appid
    key = read_key(deployment.root / "keys", V2_PARTNER.mchid)
    assert sign({k: v for k, v in params.items() if k != "paySign"}, key, "HMAC-SHA256") == params["paySign"]
    deployment.pay(order["payment"]["out_trade_no"])
    assert deployment.wait_status("V2P-1", "PAID", role="v2_partner")["paid_fen"] == 100


def test_mode1_products_from_scan_to_paid(deployment: Deployment) -> None:
    with deployment.client("v2") as http:
        created = http.post("/v1/products", json={"product_id": "cola-330", "amount_fen": 350, "description": "可乐"})
        assert created.status_code == 201, created.text
        assert (
            http.post(
                "/v1/products", json={"product_id": "cola-330", "amount_fen": 350, "description": "可乐"}
            ).status_code
            == 200
        )
        assert (
            http.post("/v1/products", json={"product_id": "bad id!", "amount_fen": 1, "description": "x"}).status_code
            == 422
        )
        assert (
            http.post("/v1/products", json={"product_id": "p", "amount_fen": 1.5, "description": "x"}).status_code
            == 422
        )
        code = http.get("/v1/products/cola-330/qr").json()
        assert code["code_url"].startswith("weixin://wxpay/bizpayurl?") and "product_id=cola-330" in code["code_url"]
        assert code["svg"].startswith("<svg")
        svg = http.get("/v1/products/cola-330/qr", params={"format": "svg"})
        assert svg.headers["content-type"].startswith("image/svg+xml")
        assert http.get("/v1/products/nope/qr").status_code == 404
        listed = http.get("/v1/products").json()["products"]
        assert [p["product_id"] for p in listed] == ["cola-330"]
    with deployment.client() as http:  # a v3 merchant has no printed codes
        assert (
            http.post("/v1/products", json={"product_id": "x", "amount_fen": 1, "description": "x"}).status_code == 409
        )
        assert http.get("/v1/products/cola-330").status_code == 404

    scanned = httpx.post(
        f"{deployment.sandbox}/sandbox/scan",
        json={"code_url": code["code_url"], "openid": "oShelf", "pay": True},
        timeout=10,
    ).json()
    assert scanned["accepted"] and scanned["transaction"]["trade_state"] == "SUCCESS"
    assert scanned["transaction"]["attach"] == "product_id=cola-330"
    out_trade_no = scanned["out_trade_no"]
    deadline = time.monotonic() + 10
    with deployment.client("v2") as http:
        while True:
            orders = http.get("/v1/orders", params={"limit": 100}).json()["orders"]
            mine = [o for o in orders if any(p["out_trade_no"] == out_trade_no for p in o["payments"])]
            if mine and mine[0]["status"] == "PAID" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert mine and mine[0]["status"] == "PAID" and mine[0]["amount_fen"] == 350
        assert mine[0]["merchant_order_no"].startswith("cola-330-")
        # a second scan is a second order
        again = httpx.post(f"{deployment.sandbox}/sandbox/scan", json={"code_url": code["code_url"]}, timeout=10).json()
        assert again["accepted"] and again["out_trade_no"] != out_trade_no
        http.post(
            "/v1/products", json={"product_id": "cola-330", "amount_fen": 350, "description": "可乐", "active": False}
        )
    inactive = httpx.post(f"{deployment.sandbox}/sandbox/scan", json={"code_url": code["code_url"]}, timeout=10).json()
    assert inactive["accepted"] is False and inactive["answer"]["err_code_des"] == "商品已下架"
    with deployment.client("v2_partner") as http:  # a service provider's sub-merchant: the code names it
        http.post("/v1/products", json={"product_id": "cola-330", "amount_fen": 400, "description": "可乐"})
        partner_code = http.get("/v1/products/cola-330/qr").json()["code_url"]
    assert f"sub_mch_id={V2_PARTNER.sub_mchid}" in partner_code
    sold = httpx.post(
        f"{deployment.sandbox}/sandbox/scan", json={"code_url": partner_code, "pay": True}, timeout=10
    ).json()
    assert sold["accepted"] and sold["transaction"]["amount"]["total"] == 400


def test_v2_callbacks_from_an_independent_wechat(deployment: Deployment) -> None:
    wechat = _wechat(deployment, V2_PARTNER)  # partner fields and HMAC-SHA256; its day stays for reconciliation
    url = deployment.ledger
    order = _create(deployment, "V2-CB-1", role="v2_partner", amount_fen=800)
    otn = order["payment"]["out_trade_no"]
    fields = wechat.pay_notification(otn, 800, cash_fee=700)  # a coupon paid 100: coupon_* fields are signed too
    body = wechat.signed(fields)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: httpx.post(url + V2_NOTIFY, content=body, timeout=30), range(20)))
    assert all(a.status_code == 200 and parse(a.content)["return_code"] == "SUCCESS" for a in answers)
    deployment.wait_status("V2-CB-1", "PAID", role="v2_partner")
    paid = [
        e
        for e in _history(deployment, V2_PARTNER.sub_mchid, "V2-CB-1")
        if e["type"] == "Paid" and e["aggregate"] == "Payment"
    ]
    assert len(paid) == 1  # twenty deliveries, one change

    before = _refused(deployment)
    other = _create(deployment, "V2-CB-2", role="v2_partner", amount_fen=800)["payment"]["out_trade_no"]
    good = wechat.pay_notification(other, 800)
    bad: dict[str, bytes] = {
        "bad sign": wechat.signed(good).replace(b"<sign><![CDATA[", b"<sign><![CDATA[0"),
        "wrong key": wechat.signed(good, key="k" * 32),
        "wrong sign type": wechat.signed(good, sign_type="MD5"),  # the merchant signs with HMAC-SHA256
        "tampered": wechat.signed(good).replace(b"<total_fee><![CDATA[800", b"<total_fee><![CDATA[1"),
        "unknown order": wechat.signed(wechat.pay_notification("zbNEVERISSUED000000000000001", 800)),
        "other merchant": wechat.signed(good | {"mch_id": "1999999999"}),
        "other sub-merchant": wechat.signed(good | {"sub_mch_id": "1999999999"}),
        "xxe": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><a>&e;</a></xml>',
        "junk": b"\x00\xffnot xml",
        "json": b'{"return_code":"SUCCESS"}',
        "empty": b"",
        "fail result": wechat.signed(good | {"result_code": "FAIL"}),
    }
    for name, payload in bad.items():
        answer = httpx.post(url + V2_NOTIFY, content=payload, timeout=10)
        assert 400 <= answer.status_code < 500, (name, answer.status_code, answer.text)
        assert parse(answer.content)["return_code"] == "FAIL", name
    assert _refused(deployment) == before + len(bad)  # every refusal kept for audit
    with deployment.client("v2_partner") as http:
        assert http.get("/v1/orders/V2-CB-2").json()["status"] != "PAID"

    mismatch = _create(deployment, "V2-CB-3", role="v2_partner", amount_fen=800)["payment"]["out_trade_no"]
    answer = httpx.post(url + V2_NOTIFY, content=wechat.signed(wechat.pay_notification(mismatch, 1)), timeout=10)
    assert parse(answer.content)["return_code"] == "SUCCESS"  # recorded, so WeChat stops retrying
    deployment.wait_status("V2-CB-3", "NEEDS_REVIEW", role="v2_partner")


def test_v2_refund_notifications_refused_when_req_info_does_not_decrypt(deployment: Deployment) -> None:
    wechat = _wechat(deployment)
    plain = {
        "out_refund_no": "V2-NOPE",
        "out_trade_no": "x",
        "refund_id": "5",
        "refund_fee": "1",
        "refund_status": "SUCCESS",
    }
    before = _refused(deployment)
    for payload in (
        wechat.refund_notification(plain, key="z" * 32),  # not this merchant's key
        wechat.refund_notification(plain),  # decrypts, but no such refund
        b"<xml><return_code>SUCCESS</return_code><mch_id>1900000002</mch_id></xml>",
    ):
        answer = httpx.post(deployment.ledger + V2_REFUND_NOTIFY, content=payload, timeout=10)
        assert 400 <= answer.status_code < 500 and parse(answer.content)["return_code"] == "FAIL"
    assert _refused(deployment) == before + 3


def test_a_v2_day_reconciles_with_zero_differences(deployment: Deployment) -> None:
    """Last in the module: it moves the sandbox's clock a day on."""
    clock = httpx.get(f"{deployment.sandbox}/sandbox/clock").json()
    day = datetime.fromisoformat(clock["beijing_date"]).date()
    now = datetime.fromisoformat(clock["now"])
    ten_next_day = datetime.combine(day + timedelta(days=1), datetime.min.time(), now.tzinfo) + timedelta(
        hours=10, minutes=5
    )
    httpx.post(f"{deployment.sandbox}/sandbox/clock", json={"advance_seconds": (ten_next_day - now).total_seconds()})
    key = deployment.cli("apikey", "create", "--merchant", V2.mchid, "--role", "finance")
    with httpx.Client(base_url=deployment.ledger, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        report = http.post(f"/v1/finance/bills/{day.isoformat()}/import")
    assert report.status_code == 200, report.text
    result = report.json()
    assert result["differences"] == [] and result["matched"] >= 5, result
    assert result["imported"]["refunded_fen"] == 200
