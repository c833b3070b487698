"""The sandbox's API v2, driven by a merchant written from the spec alone (tests/spec_v2.py)."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.keyset import V2, V2_PARTNER
from tests.fixtures_sandbox import RunningSandbox
from tests.spec_v2 import SpecV2Merchant, XmlReceiver, decrypt_req_info, parse, read_key, sign, signed_ok, xml


def _merchant(sandbox: RunningSandbox, keyset: Path, who: Any = V2, sign_type: str | None = None) -> SpecV2Merchant:
    keys = keyset / "keys"
    account = who.mchid
    partner = {"sub_mch_id": who.sub_mchid, "sub_appid": who.sub_appid} if who.mode == "partner" else {}
    return SpecV2Merchant(
        base_url=sandbox.url,
        mch_id=account,
        appid=who.appid,
        key=read_key(keys, account),
        sign_type=sign_type or who.v2_sign_type,
        secapi_url=sandbox.tls_url,
        client_cert=(str(keys / account / "apiclient_cert.pem"), str(keys / account / "apiclient_key.pem")),
        ca_file=str(keys / "wechatpay" / "tls_ca.pem"),
        partner=partner,
    )


@pytest.fixture
def v2(sandbox: RunningSandbox, keyset: Path) -> SpecV2Merchant:
    return _merchant(sandbox, keyset)


@pytest.fixture
def notify() -> Iterator[XmlReceiver]:
    receiver = XmlReceiver()
    yield receiver
    receiver.close()


def _order(v2: SpecV2Merchant, notify_url: str, trade_type: str = "NATIVE", **extra: str) -> dict[str, str]:
    params = {
        "body": "Image形象店-深圳腾大-QQ公仔",
        "out_trade_no": "V2" + str(time.time_ns())[-16:],
        "total_fee": "100",
        "spbill_create_ip": "123.12.12.123",
        "notify_url": notify_url,
        "trade_type": trade_type,
    }
    if trade_type == "NATIVE":
        params["product_id"] = "12235413214070356458058"
    if trade_type == "JSAPI":
        params["openid"] = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    if trade_type == "MWEB":
        params["scene_info"] = '{"h5_info":{"type":"Wap","wap_url":"https://m.example.com","wap_name":"shop"}}'
    answer = v2.post("/pay/unifiedorder", **(params | extra))
    assert answer["return_code"] == "SUCCESS" and answer["result_code"] == "SUCCESS", answer
    return params | answer


def test_unifiedorder_per_trade_type(v2: SpecV2Merchant, notify: XmlReceiver) -> None:
    native = _order(v2, notify.url, "NATIVE")
    assert native["code_url"].startswith("weixin://wxpay/bizpayurl?pr=") and native["prepay_id"]
    jsapi = _order(v2, notify.url, "JSAPI")
    assert jsapi["prepay_id"].startswith("wx") and "code_url" not in jsapi
    app = _order(v2, notify.url, "APP")
    assert app["trade_type"] == "APP" and app["prepay_id"]
    h5 = _order(v2, notify.url, "MWEB")
    assert h5["mweb_url"].startswith("https://wx.tenpay.com/")


def test_hmac_sha256_requests_get_hmac_answers(sandbox: RunningSandbox, keyset: Path, notify: XmlReceiver) -> None:
    merchant = _merchant(sandbox, keyset, sign_type="HMAC-SHA256")
    answer = _order(merchant, notify.url, "JSAPI")  # post() checked the answer with HMAC-SHA256
    assert len(answer["sign"]) == 64


def test_request_errors_as_wechat_answers_them(v2: SpecV2Merchant, notify: XmlReceiver) -> None:
    bad_sign = parse(
        httpx.post(
            v2.base_url + "/pay/orderquery",
            content=v2.request("/pay/orderquery", out_trade_no="X").replace(b"<sign><![CDATA[", b"<sign><![CDATA[0"),
        ).content
    )
    assert bad_sign == {"return_code": "FAIL", "return_msg": "签名错误"}
    junk = parse(httpx.post(v2.base_url + "/pay/unifiedorder", content=b"{json}").content)
    assert junk["return_code"] == "FAIL" and "sign" not in junk
    xxe = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><a>&e;</a></xml>'
    assert parse(httpx.post(v2.base_url + "/pay/unifiedorder", content=xxe).content)["return_code"] == "FAIL"
    lacking = v2.post("/pay/unifiedorder", body="x", out_trade_no="V2LACK", total_fee="1", trade_type="NATIVE")
    assert lacking["result_code"] == "FAIL" and lacking["err_code"] == "LACK_PARAMS"
    float_fee = v2.post(
        "/pay/unifiedorder",
        body="x",
        out_trade_no="V2FLOAT",
        total_fee="0.01",
        spbill_create_ip="1.1.1.1",
        notify_url=notify.url,
        trade_type="NATIVE",
        product_id="1",
    )
    assert float_fee["err_code"] == "PARAM_ERROR"
    wrong_app = SpecV2Merchant(v2.base_url, v2.mch_id, "wx0000000000000000", v2.key)
    assert wrong_app.post("/pay/orderquery", out_trade_no="X")["err_code"] == "APPID_MCHID_NOT_MATCH"
    missing = v2.post("/pay/orderquery", out_trade_no="NEVER-MADE")
    assert missing["result_code"] == "FAIL" and missing["err_code"] == "ORDERNOTEXIST"


def test_same_order_again_same_prepay_different_terms_refused(v2: SpecV2Merchant, notify: XmlReceiver) -> None:
    first = _order(v2, notify.url, "JSAPI")
    params = {
        k: first[k]
        for k in ("body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url", "trade_type", "openid")
    }
    again = v2.post("/pay/unifiedorder", **params)
    assert again["prepay_id"] == first["prepay_id"]
    changed = v2.post("/pay/unifiedorder", **(params | {"total_fee": "101"}))
    assert changed["err_code"] == "OUT_TRADE_NO_USED"


def test_pay_notify_query_with_coupon_fields_verified_over_the_raw_map(
    sandbox: RunningSandbox, v2: SpecV2Merchant, notify: XmlReceiver
) -> None:
    order = _order(v2, notify.url, "JSAPI")
    paid = sandbox.control.post("/sandbox/pay", json={"out_trade_no": order["out_trade_no"], "payer_total_fen": 90})
    assert paid.status_code == 200, paid.text
    [body] = notify.wait_for(1)
    fields = parse(body)
    assert signed_ok(fields, v2.key, "MD5")
    assert fields["total_fee"] == "100" and fields["cash_fee"] == "90" and fields["coupon_fee_0"] == "10"
    assert fields["result_code"] == fields["return_code"] == "SUCCESS" and len(fields["time_end"]) == 14
    by_no = v2.post("/pay/orderquery", out_trade_no=order["out_trade_no"])
    assert by_no["trade_state"] == "SUCCESS" and by_no["coupon_count"] == "1" and by_no["cash_fee"] == "90"
    by_id = v2.post("/pay/orderquery", transaction_id=fields["transaction_id"])
    assert by_id["out_trade_no"] == order["out_trade_no"]
    assert v2.post("/pay/closeorder", out_trade_no=order["out_trade_no"])["err_code"] == "ORDERPAID"


def test_notification_retried_until_success_xml(
    sandbox: RunningSandbox, v2: SpecV2Merchant, notify: XmlReceiver
) -> None:
    sandbox.control.post("/sandbox/faults", json={"time_factor": 100})
    notify.answers = [xml({"return_code": "FAIL", "return_msg": "busy"}), b"<html>oops</html>"]
    order = _order(v2, notify.url)
    sandbox.control.post("/sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
    deliveries = notify.wait_for(3, timeout=15)
    assert len({parse(d)["nonce_str"] for d in deliveries}) == 1  # the same notification each time
    time.sleep(0.6)
    assert len(notify.received) == 3  # acknowledged by the third


def test_close_and_closed_again(v2: SpecV2Merchant, notify: XmlReceiver) -> None:
    order = _order(v2, notify.url)
    assert v2.post("/pay/closeorder", out_trade_no=order["out_trade_no"])["result_code"] == "SUCCESS"
    assert v2.post("/pay/closeorder", out_trade_no=order["out_trade_no"])["err_code"] == "ORDERCLOSED"
    assert v2.post("/pay/orderquery", out_trade_no=order["out_trade_no"])["trade_state"] == "CLOSED"


def test_refund_over_mutual_tls_then_refundquery_and_req_info(
    sandbox: RunningSandbox, v2: SpecV2Merchant, notify: XmlReceiver
) -> None:
    order = _order(v2, notify.url, "JSAPI")
    sandbox.control.post("/sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
    notify.wait_for(1)
    refunds = XmlReceiver("/refund-notify")
    try:
        for n, fee in enumerate(("30", "20")):
            answer = v2.post(
                "/secapi/pay/refund",
                out_trade_no=order["out_trade_no"],
                out_refund_no=f"R{order['out_trade_no']}{n}",
                total_fee="100",
                refund_fee=fee,
                notify_url=refunds.url,
            )
            assert answer["result_code"] == "SUCCESS" and answer["refund_fee"] == fee and answer["refund_id"]
        over = v2.post(
            "/secapi/pay/refund",
            out_trade_no=order["out_trade_no"],
            out_refund_no="ROVER",
            total_fee="100",
            refund_fee="51",
        )
        assert over["result_code"] == "FAIL"
        bodies = refunds.wait_for(2, timeout=10)
        envelope = parse(bodies[0])
        assert "sign" not in envelope and envelope["return_code"] == "SUCCESS"
        plain = decrypt_req_info(envelope["req_info"], v2.key)
        assert plain["refund_status"] == "SUCCESS" and plain["out_trade_no"] == order["out_trade_no"]
        assert plain["success_time"][4] == "-" and plain["refund_recv_accout"]
        listed = v2.post("/pay/refundquery", out_trade_no=order["out_trade_no"])
        assert listed["refund_count"] == "2"
        assert {listed["out_refund_no_0"], listed["out_refund_no_1"]} == {
            f"R{order['out_trade_no']}0",
            f"R{order['out_trade_no']}1",
        }
        assert listed["refund_status_0"] == "SUCCESS" and listed["refund_fee"] == "50"
        assert v2.post("/pay/refundquery", out_refund_no="NOPE")["err_code"] == "REFUNDNOTEXIST"
    finally:
        refunds.close()


def test_secapi_needs_the_client_certificate(sandbox: RunningSandbox, v2: SpecV2Merchant) -> None:
    no_certificate = SpecV2Merchant(**{**vars(v2), "client_cert": None})
    with pytest.raises(httpx.TransportError):
        no_certificate.raw("/secapi/pay/refund", out_trade_no="X", out_refund_no="R", total_fee="1", refund_fee="1")
    # and it is not served without TLS at all
    plain = httpx.post(sandbox.url + "/secapi/pay/refund", content=v2.request("/secapi/pay/refund"))
    assert plain.status_code == 404


def test_downloadbill_text_and_its_errors(sandbox: RunningSandbox, v2: SpecV2Merchant, notify: XmlReceiver) -> None:
    order = _order(v2, notify.url, "JSAPI")
    sandbox.control.post("/sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
    today = datetime.fromisoformat(sandbox.control.get("/sandbox/clock").json()["beijing_date"]).date()
    day = today.strftime("%Y%m%d")
    not_yet = parse(v2.raw("/pay/downloadbill", bill_date=day, bill_type="ALL").content)
    assert not_yet == {"return_code": "FAIL", "return_msg": "No Bill Exist"}
    sandbox.control.post("/sandbox/clock", json={"advance_seconds": 86400})
    now = datetime.now(UTC) + timedelta(days=1)
    if (now + timedelta(hours=8)).hour < 10:
        creating = parse(v2.raw("/pay/downloadbill", bill_date=day, bill_type="ALL").content)
        assert creating["return_msg"] == "Bill Creating"
        sandbox.control.post("/sandbox/clock", json={"advance_seconds": 11 * 3600})
    text = v2.raw("/pay/downloadbill", bill_date=day, bill_type="ALL").content.decode()
    assert text.startswith("交易时间,") and order["out_trade_no"] in text and "`1.00" in text
    gz = v2.raw("/pay/downloadbill", bill_date=day, bill_type="ALL", tar_type="GZIP").content
    assert gzip.decompress(gz).decode() == text
    other_day = (today - timedelta(days=5)).strftime("%Y%m%d")
    assert (
        parse(v2.raw("/pay/downloadbill", bill_date=other_day, bill_type="ALL").content)["return_msg"]
        == "No Bill Exist"
    )
    assert (
        parse(v2.raw("/pay/downloadbill", bill_date=day, bill_type="NOPE").content)["return_msg"] == "invalid bill_type"
    )


def test_partner_mode_sub_mch_id(sandbox: RunningSandbox, keyset: Path, notify: XmlReceiver) -> None:
    partner = _merchant(sandbox, keyset, V2_PARTNER)
    order = _order(partner, notify.url, "JSAPI", openid="", sub_openid="oSub123")
    sandbox.control.post("/sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
    fields = parse(notify.wait_for(1)[0])
    assert signed_ok(fields, partner.key, "HMAC-SHA256")
    assert fields["sub_mch_id"] == V2_PARTNER.sub_mchid and fields["sub_openid"] == "oSub123"
    stranger = SpecV2Merchant(**{**vars(partner), "partner": {"sub_mch_id": "1999999999"}})
    assert stranger.post("/pay/orderquery", out_trade_no=order["out_trade_no"])["err_code"] == "ORDERNOTEXIST"


def test_mode1_scan_calls_the_merchant_and_pays_its_prepay(
    sandbox: RunningSandbox, v2: SpecV2Merchant, notify: XmlReceiver
) -> None:
    callback = XmlReceiver("/native-callback")
    config = sandbox.sandbox.config
    config.merchants[V2.mchid].__dict__["native_callback_url"] = callback.url  # the 扫码回调URL in the portal
    made: list[dict[str, str]] = []

    def answer(body: bytes) -> bytes:
        scan = parse(body)
        assert signed_ok(scan, v2.key, "MD5") and scan["product_id"] == "p1" and scan["openid"] == "oScanner"
        order = _order(v2, notify.url, "NATIVE", product_id=scan["product_id"], openid=scan["openid"])
        made.append(order)
        reply = {
            "return_code": "SUCCESS",
            "appid": v2.appid,
            "mch_id": v2.mch_id,
            "nonce_str": "n1",
            "prepay_id": order["prepay_id"],
            "result_code": "SUCCESS",
        }
        return xml(reply | {"sign": sign(reply, v2.key)})

    callback.handler = answer
    try:
        ts, nonce = str(int(time.time())), "abc123"
        code = {"appid": v2.appid, "mch_id": v2.mch_id, "product_id": "p1", "time_stamp": ts, "nonce_str": nonce}
        url = "weixin://wxpay/bizpayurl?" + "&".join(
            f"{k}={v}" for k, v in (code | {"sign": sign(code, v2.key)}).items()
        )
        scanned = sandbox.control.post("/sandbox/scan", json={"code_url": url, "openid": "oScanner", "pay": True})
        assert scanned.status_code == 200, scanned.text
        assert scanned.json()["accepted"] and scanned.json()["transaction"]["trade_state"] == "SUCCESS"
        assert parse(notify.wait_for(1)[0])["out_trade_no"] == made[0]["out_trade_no"]
        forged = sandbox.control.post("/sandbox/scan", json={"code_url": url.replace("p1", "p2"), "openid": "o"})
        assert forged.status_code == 400 and forged.json()["code"] == "SIGNERROR"
        fail = {"return_code": "SUCCESS", "appid": v2.appid, "mch_id": v2.mch_id, "nonce_str": "n2"}
        fail |= {"result_code": "FAIL", "err_code_des": "商品已下架"}
        callback.handler = lambda body: xml(fail | {"sign": sign(fail, v2.key)})
        refused = sandbox.control.post("/sandbox/scan", json={"code_url": url, "openid": "o"}).json()
        assert refused["accepted"] is False and refused["answer"]["err_code_des"] == "商品已下架"
        callback.handler = lambda body: xml(fail)  # the merchant forgot to sign its answer
        unsigned = sandbox.control.post("/sandbox/scan", json={"code_url": url, "openid": "o"})
        assert unsigned.status_code == 502 and unsigned.json()["code"] == "CALLBACK_SIGN_ERROR"
    finally:
        callback.close()
