"""The sandbox over real HTTP, driven by a merchant written from the spec alone."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import stat
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sandbox.keyset import DIRECT, PARTNER, PUBLIC_KEY_ID, init_keyset
from tests.fixtures_sandbox import RunningSandbox
from tests.spec_merchant import NotifyReceiver, SpecMerchant, verify_signed

NATIVE = "/v3/pay/transactions/native"


def native_order(
    merchant: SpecMerchant, notify_url: str, out_trade_no: str, total: int = 100, **extra: Any
) -> dict[str, Any]:
    return {
        "appid": DIRECT.appid,
        "mchid": merchant.mchid,
        "description": "奶茶",
        "out_trade_no": out_trade_no,
        "notify_url": notify_url,
        "amount": {"total": total, "currency": "CNY"},
    } | extra


def paid_order(
    merchant: SpecMerchant,
    sandbox: RunningSandbox,
    receiver: NotifyReceiver,
    otn: str,
    total: int = 100,
    **how: Any,
) -> dict[str, Any]:
    assert merchant.call("POST", NATIVE, native_order(merchant, receiver.url, otn, total)).status_code == 200
    answer = sandbox.control.post("/sandbox/pay", json={"out_trade_no": otn, "openid": "oPayer1"} | how)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_keys_init_writes_private_files_and_is_idempotent(tmp_path: Path) -> None:
    done = init_keyset(tmp_path / "k", tmp_path / "z.toml", "http://l", "http://s")
    assert "wrote" in done[-1]
    for path in (tmp_path / "k").rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    key = (tmp_path / "k" / DIRECT.mchid / "apiv3_key").read_bytes()
    assert len(key) == 32
    assert len((tmp_path / "k" / DIRECT.mchid / "v2_key").read_bytes()) == 32
    again = init_keyset(tmp_path / "k", tmp_path / "z.toml", "http://l", "http://s")
    assert "left as it is" in again[-1]
    assert (tmp_path / "k" / DIRECT.mchid / "apiv3_key").read_bytes() == key


def test_native_pay_notify_cycle(sandbox: RunningSandbox, merchant: SpecMerchant, receiver: NotifyReceiver) -> None:
    created = merchant.call("POST", NATIVE, native_order(merchant, receiver.url, "ZB0000000001", 1234))
    assert created.status_code == 200 and merchant.verified(created)
    code_url = created.json()["code_url"]
    assert code_url.startswith("weixin://wxpay/bizpayurl?pr=")
    assert sandbox.control.post("/sandbox/pay", json={"code_url": code_url, "openid": "oPayer1"}).status_code == 200

    delivery = receiver.wait_for(1)[0]
    assert verify_signed(merchant.platform_keys, delivery.headers, delivery.body)
    envelope = json.loads(delivery.body)
    assert envelope["event_type"] == "TRANSACTION.SUCCESS" and envelope["resource"]["associated_data"] == "transaction"
    assert len(envelope["resource"]["nonce"]) == 12 and len(envelope["id"]) == 36
    resource = merchant.decrypt(envelope["resource"])
    assert resource["mchid"] == DIRECT.mchid and resource["appid"] == DIRECT.appid
    assert resource["out_trade_no"] == "ZB0000000001" and resource["trade_state"] == "SUCCESS"
    assert resource["trade_type"] == "NATIVE" and resource["payer"] == {"openid": "oPayer1"}
    assert resource["amount"] == {"total": 1234, "payer_total": 1234, "currency": "CNY", "payer_currency": "CNY"}
    assert datetime.fromisoformat(resource["success_time"]).utcoffset() == timedelta(hours=8)

    queried = merchant.call("GET", f"/v3/pay/transactions/out-trade-no/ZB0000000001?mchid={merchant.mchid}")
    assert queried.status_code == 200 and merchant.verified(queried)
    assert queried.json()["transaction_id"] == resource["transaction_id"]
    by_id = merchant.call("GET", f"/v3/pay/transactions/id/{resource['transaction_id']}?mchid={merchant.mchid}")
    assert by_id.status_code == 200 and by_id.json()["out_trade_no"] == "ZB0000000001"
    log = sandbox.control.get("/sandbox/notifications").json()["deliveries"]
    assert [(d["out_trade_no"], d["event_type"], d["attempt"], d["status"]) for d in log] == [
        ("ZB0000000001", "TRANSACTION.SUCCESS", 1, 204)
    ]


@pytest.mark.parametrize(
    ("channel", "extra", "field"),
    [
        ("jsapi", {"payer": {"openid": "oX"}}, "prepay_id"),
        ("app", {}, "prepay_id"),
        ("h5", {"scene_info": {"payer_client_ip": "127.0.0.1", "h5_info": {"type": "Wap"}}}, "h5_url"),
    ],
)
def test_every_channel_prepays(
    sandbox: RunningSandbox, merchant: SpecMerchant, channel: str, extra: dict[str, Any], field: str
) -> None:
    body = native_order(merchant, "https://merchant.example/notify", f"CH{channel}0001") | extra
    answer = merchant.call("POST", f"/v3/pay/transactions/{channel}", body)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {field} and merchant.verified(answer)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"out_trade_no": "short"}, "out_trade_no"),
        ({"out_trade_no": "has space 123"}, "out_trade_no"),
        ({"notify_url": "https://m.example/notify?x=1"}, "notify_url"),
        ({"notify_url": "http://m.example/notify"}, "notify_url"),
        ({"amount": {"total": 1.5}}, "amount/total"),
        ({"amount": {"total": "100"}}, "amount/total"),
        ({"amount": {"total": 0}}, "amount/total"),
        ({"amount": {"total": -1}}, "amount/total"),
        ({"description": ""}, "description"),
    ],
)
def test_parameter_errors(merchant: SpecMerchant, change: dict[str, Any], field: str) -> None:
    answer = merchant.call("POST", NATIVE, native_order(merchant, "https://m.example/n", "PARAM00001") | change)
    assert answer.status_code == 400
    assert answer.json()["code"] == "PARAM_ERROR" and answer.json()["detail"]["field"] == field


def test_time_expire_must_be_rfc3339(merchant: SpecMerchant) -> None:
    answer = merchant.call(
        "POST", NATIVE, native_order(merchant, "https://m.example/n", "TIME000001", time_expire="20220421191948")
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == {"location": "body", "value": "20220421191948"}
    assert "RFC3339" in answer.json()["message"]


def test_jsapi_needs_the_payer(merchant: SpecMerchant) -> None:
    answer = merchant.call(
        "POST", "/v3/pay/transactions/jsapi", native_order(merchant, "https://m.example/n", "JSAPI00001")
    )
    assert answer.status_code == 400 and answer.json()["detail"]["field"] == "payer"


def test_re_prepay_identical_is_accepted_and_different_is_out_trade_no_used(merchant: SpecMerchant) -> None:
    body = native_order(merchant, "https://m.example/n", "REPAY00001")
    first = merchant.call("POST", NATIVE, body)
    again = merchant.call("POST", NATIVE, body)
    assert again.status_code == 200 and again.json() == first.json()
    other = merchant.call("POST", NATIVE, body | {"amount": {"total": 101, "currency": "CNY"}})
    assert other.status_code == 403 and other.json()["code"] == "OUT_TRADE_NO_USED"


def test_query_and_close_rules(sandbox: RunningSandbox, merchant: SpecMerchant, receiver: NotifyReceiver) -> None:
    missing = merchant.call("GET", f"/v3/pay/transactions/out-trade-no/NOPE000001?mchid={merchant.mchid}")
    assert missing.status_code == 404 and missing.json()["code"] == "ORDER_NOT_EXIST"
    merchant.call("POST", NATIVE, native_order(merchant, receiver.url, "CLOSE00001"))
    unpaid = merchant.call("GET", f"/v3/pay/transactions/out-trade-no/CLOSE00001?mchid={merchant.mchid}").json()
    assert unpaid["trade_state"] == "NOTPAY" and "transaction_id" not in unpaid and "payer" not in unpaid
    closed = merchant.call("POST", "/v3/pay/transactions/out-trade-no/CLOSE00001/close", {"mchid": merchant.mchid})
    assert closed.status_code == 204 and closed.content == b"" and merchant.verified(closed)
    again = merchant.call("POST", "/v3/pay/transactions/out-trade-no/CLOSE00001/close", {"mchid": merchant.mchid})
    assert again.status_code == 400 and again.json()["code"] == "ORDER_CLOSED"
    assert sandbox.control.post("/sandbox/pay", json={"out_trade_no": "CLOSE00001"}).status_code == 409

    paid_order(merchant, sandbox, receiver, "CLOSE00002")
    refused = merchant.call("POST", "/v3/pay/transactions/out-trade-no/CLOSE00002/close", {"mchid": merchant.mchid})
    assert refused.status_code == 403 and refused.json()["code"] == "ORDERPAID"


def test_query_by_transaction_id_only_once_paid(merchant: SpecMerchant) -> None:
    merchant.call("POST", NATIVE, native_order(merchant, "https://m.example/n", "BYID000001"))
    answer = merchant.call("GET", f"/v3/pay/transactions/id/4200000000000000001?mchid={merchant.mchid}")
    assert answer.status_code == 404 and answer.json()["code"] == "ORDER_NOT_EXIST"


def test_request_signatures_are_checked(merchant: SpecMerchant) -> None:
    body = native_order(merchant, "https://m.example/n", "SIGN000001")
    raw = json.dumps(body).encode()
    forged = merchant.authorization("POST", NATIVE, raw.replace(b"100", b"1"))  # signed over other bytes
    answer = merchant.call("POST", NATIVE, raw=raw, authorization=forged)
    assert answer.status_code == 401 and answer.json()["code"] == "SIGN_ERROR"
    assert answer.json()["detail"]["sign_information"]["url"] == NATIVE
    stale = merchant.call("POST", NATIVE, body, timestamp=int(time.time()) - 301)
    assert stale.status_code == 401 and "5分钟" in stale.json()["message"]
    millis = merchant.call("POST", NATIVE, body, timestamp=int(time.time() * 1000))
    assert millis.status_code == 401
    wrong_serial = merchant.authorization("POST", NATIVE, raw).replace(merchant.serial_no, "0123456789ABCDEF")
    answer = merchant.call("POST", NATIVE, raw=raw, authorization=wrong_serial)
    assert answer.status_code == 401 and answer.json()["message"] == "商户证书序列号有误。"
    assert merchant.call("POST", NATIVE, raw=raw, authorization="Bearer x").status_code == 401
    # nothing was created by any of these
    assert (
        merchant.call("GET", f"/v3/pay/transactions/out-trade-no/SIGN000001?mchid={merchant.mchid}").status_code == 404
    )


def test_response_key_follows_the_request_serial_in_both_mode(
    sandbox: RunningSandbox, merchant: SpecMerchant, keyset: Path
) -> None:
    body = native_order(merchant, "https://m.example/n", "MODE000001")
    with_pub = merchant.call("POST", NATIVE, body)
    assert with_pub.headers["Wechatpay-Serial"] == PUBLIC_KEY_ID and merchant.verified(with_pub)
    merchant.send_serial = None
    certs = merchant.call("GET", "/v3/certificates")
    assert certs.status_code == 200
    item = certs.json()["data"][0]
    enc = item["encrypt_certificate"]
    assert enc["associated_data"] == "certificate" and enc["algorithm"] == "AEAD_AES_256_GCM"
    pem = AESGCM(merchant.apiv3_key).decrypt(enc["nonce"].encode(), base64.b64decode(enc["ciphertext"]), b"certificate")
    cert = x509.load_pem_x509_certificate(pem)
    assert format(cert.serial_number, "X") == item["serial_no"] == certs.headers["Wechatpay-Serial"]
    merchant.platform_keys[item["serial_no"]] = cert.public_key()
    assert merchant.verified(certs)
    with_cert = merchant.call("POST", NATIVE, body)
    assert with_cert.headers["Wechatpay-Serial"] == item["serial_no"] and merchant.verified(with_cert)


def test_public_key_mode_has_no_certificates(start_sandbox: Any, keyset: Path) -> None:
    server = start_sandbox(mode="public_key", database="pk.db")
    merchant = SpecMerchant.from_files(server.url, keyset / "keys", DIRECT.mchid, PUBLIC_KEY_ID)
    answer = merchant.call("GET", "/v3/certificates")
    assert answer.status_code == 404 and answer.json()["code"] == "RESOURCE_NOT_EXISTS"
    created = merchant.call("POST", NATIVE, native_order(merchant, "https://m.example/n", "PKMODE0001"))
    assert created.headers["Wechatpay-Serial"] == PUBLIC_KEY_ID and merchant.verified(created)


def test_refund_cycle_and_limits(sandbox: RunningSandbox, merchant: SpecMerchant, receiver: NotifyReceiver) -> None:
    unpaid = {
        "out_trade_no": "RFUND00001",
        "out_refund_no": "R1",
        "amount": {"refund": 10, "total": 1000, "currency": "CNY"},
    }
    merchant.call("POST", NATIVE, native_order(merchant, receiver.url, "RFUND00001", 1000))
    answer = merchant.call("POST", "/v3/refund/domestic/refunds", unpaid)
    assert answer.status_code == 404 and answer.json()["code"] == "RESOURCE_NOT_EXISTS"
    sandbox.control.post("/sandbox/pay", json={"out_trade_no": "RFUND00001"})
    receiver.wait_for(1)

    refund = merchant.call(
        "POST", "/v3/refund/domestic/refunds", unpaid | {"amount": {"refund": 300, "total": 1000, "currency": "CNY"}}
    )
    assert refund.status_code == 200 and merchant.verified(refund)
    assert refund.json()["status"] == "PROCESSING"
    retry = merchant.call(
        "POST", "/v3/refund/domestic/refunds", unpaid | {"amount": {"refund": 300, "total": 1000, "currency": "CNY"}}
    )
    assert retry.json()["refund_id"] == refund.json()["refund_id"]
    too_much = merchant.call(
        "POST",
        "/v3/refund/domestic/refunds",
        unpaid | {"out_refund_no": "R2", "amount": {"refund": 701, "total": 1000, "currency": "CNY"}},
    )
    assert too_much.status_code == 400 and too_much.json()["code"] == "INVALID_REQUEST"

    notices = receiver.wait_for(2)
    envelope = json.loads(notices[1].body)
    assert envelope["event_type"] == "REFUND.SUCCESS" and envelope["resource"]["associated_data"] == "refund"
    resource = merchant.decrypt(envelope["resource"])
    assert resource["refund_status"] == "SUCCESS" and resource["out_refund_no"] == "R1"
    assert resource["amount"]["refund"] == 300 and resource["user_received_account"]
    queried = merchant.call("GET", "/v3/refund/domestic/refunds/R1").json()
    assert queried["status"] == "SUCCESS" and "success_time" in queried
    order = merchant.call("GET", f"/v3/pay/transactions/out-trade-no/RFUND00001?mchid={merchant.mchid}").json()
    assert order["trade_state"] == "REFUND"


def test_refund_closed_and_abnormal_on_request(
    sandbox: RunningSandbox, merchant: SpecMerchant, receiver: NotifyReceiver
) -> None:
    paid_order(merchant, sandbox, receiver, "RFUND00002", 500)
    sandbox.control.post("/sandbox/faults", json={"refund_result": "PROCESSING"})
    body = {
        "out_trade_no": "RFUND00002",
        "out_refund_no": "RC1",
        "amount": {"refund": 100, "total": 500, "currency": "CNY"},
    }
    assert merchant.call("POST", "/v3/refund/domestic/refunds", body).json()["status"] == "PROCESSING"
    time.sleep(0.3)
    assert merchant.call("GET", "/v3/refund/domestic/refunds/RC1").json()["status"] == "PROCESSING"
    assert sandbox.control.post("/sandbox/refunds/RC1", json={"status": "ABNORMAL"}).json()["status"] == "ABNORMAL"
    assert sandbox.control.post("/sandbox/refunds/RC1", json={"status": "CLOSED"}).json()["status"] == "CLOSED"
    types = [json.loads(r.body)["event_type"] for r in receiver.wait_for(3)]
    # delivered in parallel, as WeChat does: the order of arrival is not promised
    assert sorted(types) == ["REFUND.ABNORMAL", "REFUND.CLOSED", "TRANSACTION.SUCCESS"]
    # the closed refund frees its amount: 500 can be refunded in full again
    full = merchant.call(
        "POST",
        "/v3/refund/domestic/refunds",
        body | {"out_refund_no": "RC2", "amount": {"refund": 500, "total": 500, "currency": "CNY"}},
    )
    assert full.status_code == 200


def test_an_overpaid_transaction_refunds_what_it_reports_as_paid(
    sandbox: RunningSandbox, merchant: SpecMerchant, receiver: NotifyReceiver
) -> None:
    """The total WeChat reports for a transaction is the one its refunds are checked against (issue 23, point 3)."""
    paid = paid_order(merchant, sandbox, receiver, "RFUND00003", 1000, total_fen=1500)
    assert paid["amount"]["total"] == 1500
    queried = merchant.call("GET", f"/v3/pay/transactions/out-trade-no/RFUND00003?mchid={merchant.mchid}").json()
    assert queried["amount"]["total"] == 1500
    body = {"out_trade_no": "RFUND00003", "out_refund_no": "RO1", "amount": {"refund": 500, "total": 1000}}
    stale = merchant.call(
        "POST", "/v3/refund/domestic/refunds", body | {"amount": {"refund": 500, "total": 1000, "currency": "CNY"}}
    )
    assert stale.status_code == 400 and stale.json()["code"] == "INVALID_REQUEST"  # not the total WeChat reports
    surplus = merchant.call(
        "POST", "/v3/refund/domestic/refunds", body | {"amount": {"refund": 500, "total": 1500, "currency": "CNY"}}
    )
    assert surplus.status_code == 200, surplus.text
    assert surplus.json()["amount"]["total"] == 1500 and surplus.json()["amount"]["refund"] == 500
    rest = merchant.call(
        "POST",
        "/v3/refund/domestic/refunds",
        body | {"out_refund_no": "RO2", "amount": {"refund": 1000, "total": 1500, "currency": "CNY"}},
    )
    assert rest.status_code == 200, rest.text  # 1,500 paid: the other 1,000 can go back too
    beyond = merchant.call(
        "POST",
        "/v3/refund/domestic/refunds",
        body | {"out_refund_no": "RO3", "amount": {"refund": 1, "total": 1500, "currency": "CNY"}},
    )
    assert beyond.status_code == 400 and beyond.json()["code"] == "INVALID_REQUEST"


def test_retry_schedule_compressed(sandbox: RunningSandbox, merchant: SpecMerchant, receiver: NotifyReceiver) -> None:
    sandbox.control.post("/sandbox/faults", json={"time_factor": 100})
    receiver.answers = [500, 503]
    paid_order(merchant, sandbox, receiver, "RETRY00001")
    deliveries = receiver.wait_for(3)
    assert len({json.loads(d.body)["id"] for d in deliveries}) == 1  # the same notification, retried
    time.sleep(0.5)
    log = sandbox.control.get("/sandbox/notifications").json()["deliveries"]
    assert [(d["attempt"], d["status"]) for d in log] == [(1, 500), (2, 503), (3, 204)]


def test_duplicates_drops_and_probes(sandbox: RunningSandbox, merchant: SpecMerchant, receiver: NotifyReceiver) -> None:
    sandbox.control.post(
        "/sandbox/faults", json={"notifications": "duplicate", "duplicate_count": 3, "signtest_probe": True}
    )
    paid_order(merchant, sandbox, receiver, "DUPL000001")
    deliveries = receiver.wait_for(4)
    probes = [d for d in deliveries if d.headers["Wechatpay-Signature"].startswith("WECHATPAY/SIGNTEST/")]
    real = [d for d in deliveries if d not in probes]
    assert len(probes) == 1 and len(real) == 3
    assert all(verify_signed(merchant.platform_keys, d.headers, d.body) for d in real)
    assert not verify_signed(merchant.platform_keys, probes[0].headers, probes[0].body)

    assert sandbox.control.post("/sandbox/faults", json={"reset": True, "notifications": "drop"}).json() == {
        "notifications": "drop"
    }
    paid_order(merchant, sandbox, receiver, "DROP000001")
    time.sleep(0.5)
    assert len(receiver.received) == 4
    dropped = [
        d
        for d in sandbox.control.get("/sandbox/notifications").json()["deliveries"]
        if d["out_trade_no"] == "DROP000001"
    ]
    assert dropped and dropped[0]["dropped"] is True and dropped[0]["status"] is None


def test_endpoint_faults(sandbox: RunningSandbox, merchant: SpecMerchant) -> None:
    assert (
        sandbox.control.post("/sandbox/faults", json={"endpoints": {"/v3/pay": {"error_rate": 2}}}).status_code == 400
    )
    sandbox.control.post(
        "/sandbox/faults",
        json={"endpoints": {"/v3/pay/transactions/native": {"error_rate": 1, "error_code": "SYSTEM_ERROR"}}},
    )
    answer = merchant.call("POST", NATIVE, native_order(merchant, "https://m.example/n", "FAULT00001"))
    assert answer.status_code == 500 and answer.json()["code"] == "SYSTEM_ERROR"
    sandbox.control.post(
        "/sandbox/faults", json={"endpoints": {"/v3/pay": {"error_rate": 1, "error_code": "FREQUENCY_LIMITED"}}}
    )
    limited = merchant.call("POST", NATIVE, native_order(merchant, "https://m.example/n", "FAULT00001"))
    assert limited.status_code == 429 and limited.json()["code"] == "FREQUENCY_LIMITED"
    sandbox.control.post("/sandbox/faults", json={"reset": True})
    assert sandbox.control.get("/sandbox/faults").json() == {}
    assert merchant.call("POST", NATIVE, native_order(merchant, "https://m.example/n", "FAULT00001")).status_code == 200


def parse_bill(text: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    lines = text.strip().split("\r\n")
    header = lines[0].split(",")
    rows = [dict(zip(header, (f[1:] for f in line.split(",")), strict=True)) for line in lines[1:-2]]
    summary = dict(zip(lines[-2].split(","), (f[1:] for f in lines[-1].split(",")), strict=True))
    return rows, summary


def test_trade_bill(sandbox: RunningSandbox, merchant: SpecMerchant, receiver: NotifyReceiver) -> None:
    first = paid_order(merchant, sandbox, receiver, "BILL000001", 6000)
    paid_order(merchant, sandbox, receiver, "BILL000002", 1300, payer_total_fen=1000)  # a 3 元 coupon
    body = {
        "out_trade_no": "BILL000001",
        "out_refund_no": "BR1",
        "amount": {"refund": 5000, "total": 6000, "currency": "CNY"},
    }
    merchant.call("POST", "/v3/refund/domestic/refunds", body)
    receiver.wait_for(3)
    day = datetime.fromisoformat(first["success_time"]).date()
    too_early = merchant.call("GET", f"/v3/bill/tradebill?bill_date={day}")
    assert too_early.status_code == 400 and too_early.json()["code"] == "NO_STATEMENT_EXIST"
    clock = sandbox.control.get("/sandbox/clock").json()
    now = datetime.fromisoformat(clock["now"])
    ten_next_day = datetime.combine(day + timedelta(days=1), datetime.min.time(), now.tzinfo) + timedelta(hours=10)
    sandbox.control.post("/sandbox/clock", json={"advance_seconds": (ten_next_day - now).total_seconds() + 1})

    for tar in ("", "&tar_type=GZIP"):
        answer = merchant.call("GET", f"/v3/bill/tradebill?bill_date={day}&bill_type=ALL{tar}")
        assert answer.status_code == 200 and merchant.verified(answer), answer.text
        url = answer.json()["download_url"]
        path = url.split(sandbox.url, 1)[1]
        file = merchant.call("GET", path)
        assert file.status_code == 200 and "Wechatpay-Signature" not in file.headers
        content = gzip.decompress(file.content) if tar else file.content
        assert hashlib.sha1(content).hexdigest() == answer.json()["hash_value"]
    rows, summary = parse_bill(content.decode("utf-8"))
    assert [(r["商户订单号"], r["交易状态"], r["应结订单金额"], r["退款金额"], r["手续费"]) for r in rows] == [
        ("BILL000001", "SUCCESS", "60.00", "0.00", "0.36000"),
        ("BILL000002", "SUCCESS", "13.00", "0.00", "0.07800"),
        ("BILL000001", "REFUND", "0.00", "50.00", "-0.30000"),
    ]
    assert rows[0]["特约商户号"] == "0" and rows[0]["费率"] == "0.60%"
    assert [r["代金券金额"] for r in rows[:2]] == ["0.00", "3.00"]  # WeChat settles the total all the same
    assert summary == {
        "总交易单数": "3",
        "应结订单总金额": "73.00",
        "退款总金额": "50.00",
        "充值券退款总金额": "0.00",
        "手续费总金额": "0.13800",
        "订单总金额": "73.00",
        "申请退款总金额": "50.00",
    }
    empty_day = merchant.call("GET", f"/v3/bill/tradebill?bill_date={day - timedelta(days=1)}")
    assert empty_day.status_code == 400 and empty_day.json()["code"] == "NO_STATEMENT_EXIST"


def test_partner_mode(sandbox: RunningSandbox, partner: SpecMerchant, receiver: NotifyReceiver) -> None:
    body = {
        "sp_appid": PARTNER.appid,
        "sp_mchid": PARTNER.mchid,
        "sub_appid": PARTNER.sub_appid,
        "sub_mchid": PARTNER.sub_mchid,
        "description": "套餐",
        "out_trade_no": "PARTNER001",
        "notify_url": receiver.url,
        "amount": {"total": 990},
        "payer": {"sub_openid": "oSub1"},
    }
    answer = partner.call("POST", "/v3/pay/partner/transactions/jsapi", body)
    assert answer.status_code == 200 and partner.verified(answer), answer.text
    unknown_sub = partner.call("POST", "/v3/pay/partner/transactions/jsapi", body | {"sub_mchid": "1999999999"})
    assert unknown_sub.status_code == 400 and unknown_sub.json()["code"] == "MCH_NOT_EXISTS"
    sandbox.control.post("/sandbox/pay", json={"out_trade_no": "PARTNER001"})
    resource = partner.decrypt(json.loads(receiver.wait_for(1)[0].body)["resource"])
    assert (resource["sp_mchid"], resource["sub_mchid"], resource["sub_appid"]) == (
        PARTNER.mchid,
        PARTNER.sub_mchid,
        PARTNER.sub_appid,
    )
    assert resource["payer"] == {"sub_openid": "oSub1"} and "mchid" not in resource
    q = f"/v3/pay/partner/transactions/out-trade-no/PARTNER001?sp_mchid={PARTNER.mchid}&sub_mchid={PARTNER.sub_mchid}"
    assert partner.call("GET", q).json()["trade_state"] == "SUCCESS"
    close = partner.call(
        "POST",
        "/v3/pay/partner/transactions/out-trade-no/PARTNER001/close",
        {"sp_mchid": PARTNER.mchid, "sub_mchid": PARTNER.sub_mchid},
    )
    assert close.status_code == 403 and close.json()["code"] == "ORDERPAID"


def test_jscode2session(sandbox: RunningSandbox, keyset: Path) -> None:
    secret = (keyset / "keys" / DIRECT.mchid / "appsecret").read_text()
    code = sandbox.control.post("/sandbox/wx-login", json={"appid": DIRECT.appid, "openid": "oMini1"}).json()["code"]
    base = f"/sns/jscode2session?appid={DIRECT.appid}&grant_type=authorization_code"
    assert sandbox.control.get(f"{base}&secret=wrong&js_code={code}").json()["errcode"] == 40125
    ok = sandbox.control.get(f"{base}&secret={secret}&js_code={code}").json()
    assert ok["openid"] == "oMini1" and len(ok["session_key"]) == 24
    assert sandbox.control.get(f"{base}&secret={secret}&js_code={code}").json()["errcode"] == 40163
    assert sandbox.control.get(f"{base}&secret={secret}&js_code=nonsense").json()["errcode"] == 40029
    expiring = sandbox.control.post("/sandbox/wx-login", json={"appid": DIRECT.appid}).json()["code"]
    sandbox.control.post("/sandbox/clock", json={"advance_seconds": 301})
    assert sandbox.control.get(f"{base}&secret={secret}&js_code={expiring}").json()["errcode"] == 40029


def test_a_restart_loses_nothing(start_sandbox: Any, keyset: Path) -> None:
    first = start_sandbox(database="persist.db")
    merchant = SpecMerchant.from_files(first.url, keyset / "keys", DIRECT.mchid, PUBLIC_KEY_ID)
    merchant.call("POST", NATIVE, native_order(merchant, "https://m.example/n", "PERSIST001"))
    first.control.post("/sandbox/clock", json={"advance_seconds": 3600})
    first.stop()
    second = start_sandbox(database="persist.db")
    merchant = SpecMerchant.from_files(second.url, keyset / "keys", DIRECT.mchid, PUBLIC_KEY_ID)
    assert (
        merchant.call("GET", f"/v3/pay/transactions/out-trade-no/PERSIST001?mchid={merchant.mchid}").status_code == 200
    )
    assert second.control.get("/sandbox/clock").json()["offset_seconds"] == 3600


def test_certificate_mode_signs_with_the_platform_certificate(start_sandbox: Any, keyset: Path) -> None:
    server = start_sandbox(mode="certificate", database="cert.db")
    receiver = NotifyReceiver()
    try:
        merchant = SpecMerchant.from_files(server.url, keyset / "keys", DIRECT.mchid, PUBLIC_KEY_ID)
        merchant.send_serial = PUBLIC_KEY_ID  # asking for the public key changes nothing in this mode
        enc = merchant.call("GET", "/v3/certificates").json()["data"][0]
        pem = AESGCM(merchant.apiv3_key).decrypt(
            enc["encrypt_certificate"]["nonce"].encode(),
            base64.b64decode(enc["encrypt_certificate"]["ciphertext"]),
            b"certificate",
        )
        merchant.platform_keys = {enc["serial_no"]: x509.load_pem_x509_certificate(pem).public_key()}
        answer = merchant.call("POST", NATIVE, native_order(merchant, receiver.url, "CERT000001"))
        assert answer.headers["Wechatpay-Serial"] == enc["serial_no"] and merchant.verified(answer)
        server.control.post("/sandbox/pay", json={"out_trade_no": "CERT000001"})
        notice = receiver.wait_for(1)[0]
        assert notice.headers["Wechatpay-Serial"] == enc["serial_no"]
        assert verify_signed(merchant.platform_keys, notice.headers, notice.body)
    finally:
        receiver.close()
