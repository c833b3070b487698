"""The adapter and the payment use cases over real HTTP against the sandbox."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from adapters.wechatpay import signing
from adapters.wechatpay.callbacks import TRANSLATIONS, CallbackRejected
from adapters.wechatpay.errors import SignatureError, WechatPayBusinessError
from application.audit import Audit
from application.callbacks import CallbackRefused
from application.reads import OrderReads
from domain.audit import Arrival
from domain.errors import InvalidTransition
from domain.requests import NewAttempt, NewOrder, NewRefund, OrderTerms
from sandbox.keyset import DIRECT, DIRECT_OA_APPID, PARTNER
from tests.adapter.conftest import Wired

MERCHANTS = [DIRECT.mchid, PARTNER.sub_mchid]


def status(wired: Wired, mchid: str, no: str) -> str:
    return OrderReads(wired.ledger).order_view(mchid, no)["status"]


def check_pay_sign(wired: Wired, mchid: str, params: dict[str, str]) -> None:
    merchant = wired.client.merchant(mchid)
    message = f"{params['appId']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n".encode()
    merchant.private_key.public_key().verify(
        base64.b64decode(params["paySign"]), message, padding.PKCS1v15(), hashes.SHA256()
    )


@pytest.mark.parametrize("mchid", MERCHANTS)
@pytest.mark.parametrize("channel", ["native", "jsapi", "miniprogram", "app", "h5"])
def test_every_channel_prepays_direct_and_partner(wired: Wired, mchid: str, channel: str) -> None:
    openid = "oPayer123" if channel in ("jsapi", "miniprogram") else None
    order, checkout = wired.service.create_order(
        NewOrder(mchid, f"CH-{channel}", OrderTerms(990, "奶茶", channel, payer_openid=openid))
    )
    view = checkout.view()
    assert view["status"] == "PREPAID" and view["out_trade_no"] == order.attempts[0]
    if channel == "native":
        assert view["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    elif channel == "h5":
        assert view["h5_url"].startswith("https://wx.tenpay.com/")
    elif channel == "app":
        assert view["app_params"]["package"] == "Sign=WXPay" and view["app_params"]["prepayid"].startswith("wx")
    else:
        params = view["pay_params"]
        assert params["signType"] == "RSA" and params["package"].startswith("prepay_id=wx")
        # the direct merchant's 公众号 pays for JSAPI, its 小程序 (the main app) for the mini-program
        direct_app = DIRECT_OA_APPID if channel == "jsapi" else DIRECT.appid
        expected_app = PARTNER.sub_appid if mchid == PARTNER.sub_mchid else direct_app
        assert params["appId"] == expected_app
        check_pay_sign(wired, mchid, params)
    # the same request again: the same attempt, nothing new at WeChat or in the ledger
    again_order, again = wired.service.create_order(
        NewOrder(mchid, f"CH-{channel}", OrderTerms(990, "奶茶", channel, payer_openid=openid))
    )
    assert again.payment.out_trade_no == checkout.payment.out_trade_no
    assert (again.view().get("code_url"), again.view().get("h5_url")) == (view.get("code_url"), view.get("h5_url"))


@pytest.mark.parametrize("mchid", MERCHANTS)
def test_pay_notify_refund_cycle(wired: Wired, mchid: str) -> None:
    order, checkout = wired.service.create_order(NewOrder(mchid, "CYCLE-1", OrderTerms(1000, "奶茶", "native")))
    wired.pay(checkout.payment.out_trade_no)
    wired.wait_until(lambda: status(wired, mchid, "CYCLE-1") == "PAID")
    refund = wired.refunding.refund(NewRefund(mchid, "CYCLE-1", "CYCLE-1-R1", 300, "少糖"))
    assert refund.status.value == "PROCESSING"
    wired.wait_until(lambda: wired.ledger.get_refund(mchid, "CYCLE-1-R1").status.value == "SUCCESS")
    view = OrderReads(wired.ledger).order_view(mchid, "CYCLE-1")
    assert (view["status"], view["paid_fen"], view["refunded_fen"]) == ("PARTIALLY_REFUNDED", 1000, 300)
    kinds = [(e.aggregate, e.type) for e in OrderReads(wired.ledger).order_history(mchid, "CYCLE-1")]
    for expected in [
        ("Payment", "Prepaid"),
        ("Payment", "Notified"),
        ("Payment", "Paid"),
        ("Order", "Paid"),
        ("Refund", "Submitted"),
        ("Refund", "Notified"),
        ("Refund", "Succeeded"),
        ("Order", "Refunded"),
    ]:
        assert expected in kinds
    notified = next(e for e in OrderReads(wired.ledger).order_history(mchid, "CYCLE-1") if e.type == "Notified")
    assert notified.data["headers"]["Wechatpay-Signature"] and json.loads(notified.data["body"])["resource"]
    assert notified.data["resource"]["trade_state"] == "SUCCESS"
    assert set(wired.endpoint.answers) == {204}


def test_duplicates_change_the_ledger_once(wired: Wired) -> None:
    wired.faults(notifications="duplicate", duplicate_count=5)
    _, checkout = wired.service.create_order(NewOrder(DIRECT.mchid, "DUP-1", OrderTerms(500, "tea", "native")))
    wired.pay(checkout.payment.out_trade_no)
    wired.wait_until(lambda: len(wired.endpoint.answers) == 5)
    assert set(wired.endpoint.answers) == {204}
    kinds = [e.type for e in OrderReads(wired.ledger).order_history(DIRECT.mchid, "DUP-1")]
    assert kinds.count("Paid") == 2 and kinds.count("Notified") == 1  # Payment.Paid + Order.Paid


def test_a_dropped_notification_is_healed_by_sync(wired: Wired) -> None:
    wired.faults(notifications="drop")
    _, checkout = wired.service.create_order(NewOrder(DIRECT.mchid, "DROP-1", OrderTerms(500, "tea", "native")))
    wired.pay(checkout.payment.out_trade_no)
    time.sleep(0.3)
    assert status(wired, DIRECT.mchid, "DROP-1") == "PAYING"
    assert wired.service.sync(DIRECT.mchid, "DROP-1")["status"] == "PAID"
    paid = [
        e
        for e in OrderReads(wired.ledger).order_history(DIRECT.mchid, "DROP-1")
        if e.aggregate == "Payment" and e.type == "Paid"
    ]
    assert paid[0].data["source"] == "query"


def test_closing_a_paid_order_records_the_payment_instead(wired: Wired) -> None:
    wired.faults(notifications="drop")
    _, checkout = wired.service.create_order(NewOrder(DIRECT.mchid, "CLOSE-1", OrderTerms(500, "tea", "native")))
    wired.pay(checkout.payment.out_trade_no)
    with pytest.raises(InvalidTransition):
        wired.service.close_order(DIRECT.mchid, "CLOSE-1")
    assert status(wired, DIRECT.mchid, "CLOSE-1") == "PAID"


def test_closing_an_unpaid_order_closes_it_at_wechat(wired: Wired) -> None:
    _, checkout = wired.service.create_order(NewOrder(DIRECT.mchid, "CLOSE-2", OrderTerms(500, "tea", "native")))
    assert wired.service.close_order(DIRECT.mchid, "CLOSE-2").status.value == "CLOSED"
    merchant = wired.client.merchant(DIRECT.mchid)
    assert wired.client.query(merchant, checkout.payment.out_trade_no)["trade_state"] == "CLOSED"
    assert wired.service.close_order(DIRECT.mchid, "CLOSE-2").status.value == "CLOSED"  # idempotent


def test_a_new_attempt_closes_the_previous_one_first(wired: Wired) -> None:
    _, first = wired.service.create_order(NewOrder(DIRECT.mchid, "AGAIN-1", OrderTerms(500, "tea", "native")))
    second = wired.service.new_payment(NewAttempt(DIRECT.mchid, "AGAIN-1", "jsapi", "oPayer9"))
    assert second.payment.out_trade_no != first.payment.out_trade_no and "pay_params" in second.view()
    merchant = wired.client.merchant(DIRECT.mchid)
    assert wired.client.query(merchant, first.payment.out_trade_no)["trade_state"] == "CLOSED"
    assert wired.ledger.get_payment(first.payment.out_trade_no).status.value == "CLOSED"
    wired.pay(second.payment.out_trade_no)
    wired.wait_until(lambda: status(wired, DIRECT.mchid, "AGAIN-1") == "PAID")
    with pytest.raises(InvalidTransition):
        wired.service.new_payment(NewAttempt(DIRECT.mchid, "AGAIN-1"))


def _in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``work`` on a thread named "A"; its result or exception lands in the list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name="A")
    thread.start()
    return thread, outcome


def test_an_attempt_closed_while_its_prepay_is_in_flight_is_closed_at_wechat_too(wired: Wired) -> None:
    """A's attempt is closed by B (WeChat: not found) before A's prepay lands: A closes it at WeChat after."""
    wired.service.create_order(NewOrder(DIRECT.mchid, "RACE-1", OrderTerms(500, "tea", "native")))
    real_prepay, entered, release = wired.client.prepay, threading.Event(), threading.Event()

    def held_prepay(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "A":
            entered.set()
            release.wait(10)
        return real_prepay(*args, **kwargs)

    wired.client.prepay = held_prepay  # type: ignore[method-assign]
    thread, outcome = _in_thread(lambda: wired.service.new_payment(NewAttempt(DIRECT.mchid, "RACE-1")))
    assert entered.wait(10)
    held = next(p for p in wired.ledger.get_order(DIRECT.mchid, "RACE-1").attempts[-1:])
    winner = wired.service.new_payment(NewAttempt(DIRECT.mchid, "RACE-1"))  # B: closes A's attempt, not yet at WeChat
    release.set()
    thread.join(10)
    assert isinstance(outcome[0], InvalidTransition)  # A is told its attempt was replaced
    merchant = wired.client.merchant(DIRECT.mchid)
    assert wired.client.query(merchant, held)["trade_state"] == "CLOSED"  # was NOTPAY: payable at WeChat
    assert wired.ledger.get_payment(held).status.value == "CLOSED"
    assert wired.client.query(merchant, winner.payment.out_trade_no)["trade_state"] == "NOTPAY"


def test_an_attempt_prepaid_while_it_is_being_closed_is_asked_about_again(wired: Wired) -> None:
    """B hears "not found" for A's attempt, then A's prepay lands: B's close sees the attempt moved and asks again."""
    wired.service.create_order(NewOrder(DIRECT.mchid, "RACE-2", OrderTerms(500, "tea", "native")))
    real_prepay, real_close = wired.client.prepay, wired.client.close
    b_asked, a_done = threading.Event(), threading.Event()

    def prepay_after_b_asked(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "A":
            b_asked.wait(10)
        return real_prepay(*args, **kwargs)

    def close_then_wait_for_a(merchant: Any, out_trade_no: str) -> Any:
        try:
            return real_close(merchant, out_trade_no)
        finally:
            if threading.current_thread().name != "A" and not b_asked.is_set() and out_trade_no == held[0]:
                b_asked.set()
                a_done.wait(10)

    held: list[str] = []
    wired.client.prepay = prepay_after_b_asked  # type: ignore[method-assign]
    wired.client.close = close_then_wait_for_a  # type: ignore[method-assign]

    def a() -> Any:
        try:
            return wired.service.new_payment(NewAttempt(DIRECT.mchid, "RACE-2"))
        finally:
            a_done.set()

    order_before = wired.ledger.get_order(DIRECT.mchid, "RACE-2")
    thread, outcome = _in_thread(a)
    deadline = time.monotonic() + 10
    while len(wired.ledger.get_order(DIRECT.mchid, "RACE-2").attempts) == len(order_before.attempts):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    held.append(wired.ledger.get_order(DIRECT.mchid, "RACE-2").attempts[-1])
    winner = wired.service.new_payment(NewAttempt(DIRECT.mchid, "RACE-2"))  # B
    thread.join(10)
    assert not isinstance(outcome[0], Exception), outcome
    assert wired.ledger.get_payment(held[0]).status.value == "CLOSED"
    merchant = wired.client.merchant(DIRECT.mchid)
    assert wired.client.query(merchant, held[0])["trade_state"] == "CLOSED"  # was NOTPAY: payable at WeChat
    assert wired.client.query(merchant, winner.payment.out_trade_no)["trade_state"] == "NOTPAY"


def test_a_refund_wechat_refuses_frees_the_reservation(wired: Wired) -> None:
    _, checkout = wired.service.create_order(NewOrder(DIRECT.mchid, "NE-1", OrderTerms(500, "tea", "native")))
    wired.pay(checkout.payment.out_trade_no)
    wired.wait_until(lambda: status(wired, DIRECT.mchid, "NE-1") == "PAID")
    wired.faults(refund_balance_fen=0)
    with pytest.raises(WechatPayBusinessError) as info:
        wired.refunding.refund(NewRefund(DIRECT.mchid, "NE-1", "NE-1-R1", 500))
    assert info.value.is_code("NOT_ENOUGH")
    assert wired.ledger.get_refund(DIRECT.mchid, "NE-1-R1").status.value == "CLOSED"
    wired.faults(reset=True)
    assert wired.refunding.refund(NewRefund(DIRECT.mchid, "NE-1", "NE-1-R2", 500)).status.value == "PROCESSING"


def test_injected_errors_and_latency_are_retried_with_the_same_identifiers(wired: Wired) -> None:
    wired.faults(
        endpoints={
            "/v3/pay/transactions/native": {
                "error_rate": 1,
                "error_code": "SYSTEM_ERROR",
                "count": 2,
                "latency_ms": 100,
            }
        }
    )
    _, checkout = wired.service.create_order(NewOrder(DIRECT.mchid, "FLAKY-1", OrderTerms(500, "tea", "native")))
    assert checkout.view()["code_url"]
    assert wired.client.stats.by_code.get("SYSTEM_ERROR") == 2 and len(wired.sleeps) == 2
    wired.faults(
        reset=True,
        endpoints={
            "/v3/pay/transactions/out-trade-no": {"error_rate": 1, "count": 1, "error_code": "FREQUENCY_LIMITED"}
        },
    )
    assert wired.service.sync(DIRECT.mchid, "FLAKY-1")["status"] == "PAYING"
    assert wired.client.stats.by_code.get("FREQUENCY_LIMITED") == 1 and len(wired.sleeps) == 3
    # one order at WeChat: the retries re-sent the same out_trade_no with the same body
    transactions = [
        t for t in wired.sandbox.sandbox.store.all("transaction") if t["out_trade_no"] == checkout.payment.out_trade_no
    ]
    assert len(transactions) == 1


def test_certificate_mode_downloads_certificates_and_follows_a_rotation(wire: Any) -> None:
    wired = wire(mode="certificate", public_key=False)
    _, checkout = wired.service.create_order(NewOrder(DIRECT.mchid, "CERT-1", OrderTerms(500, "tea", "native")))
    keys = wired.client.keys[DIRECT.mchid]
    first = {c.serial_no for c in keys.certificates}
    assert len(first) == 1
    rotated = wired.sandbox.control.post("/sandbox/certificates/rotate").json()
    assert len(rotated["live"]) == 2
    keys._last_refresh = -1e9  # the cool-down is for floods, not for this test
    wired.pay(checkout.payment.out_trade_no)  # the notification is signed with the new certificate
    wired.wait_until(lambda: status(wired, DIRECT.mchid, "CERT-1") == "PAID")
    assert {c.serial_no for c in keys.certificates} == set(rotated["live"])


def test_public_key_mode(wire: Any) -> None:
    wired = wire(mode="public_key")
    _, checkout = wired.service.create_order(NewOrder(DIRECT.mchid, "PK-1", OrderTerms(500, "tea", "native")))
    wired.pay(checkout.payment.out_trade_no)
    wired.wait_until(lambda: status(wired, DIRECT.mchid, "PK-1") == "PAID")
    assert wired.client.keys[DIRECT.mchid].certificates == []


# -- refused callbacks: forged, stale, probe, tampered, wrong merchant, unknown order -----------------


def _captured(wired: Wired, no: str) -> tuple[dict[str, str], bytes]:
    """A real notification as WeChat sent it, taken from the payment's Notified event."""
    event = next(e for e in OrderReads(wired.ledger).order_history(DIRECT.mchid, no) if e.type == "Notified")
    return dict(event.data["headers"]), event.data["body"].encode()


def _sign(wired: Wired, headers: dict[str, str], body: bytes, timestamp: int | None = None) -> dict[str, str]:
    platform = wired.sandbox.sandbox.config
    ts = str(timestamp if timestamp is not None else int(time.time()))
    nonce = signing.new_nonce()
    return headers | {
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Serial": platform.public_key_id,
        "Wechatpay-Signature": signing.sign(platform.public_key_private, signing.response_message(ts, nonce, body)),
    }


def _tamper(body: bytes) -> bytes:
    envelope = json.loads(body)
    ct = envelope["resource"]["ciphertext"]
    envelope["resource"]["ciphertext"] = ("A" if ct[0] != "A" else "B") + ct[1:]
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def test_bad_callbacks_are_refused_recorded_and_change_nothing(wired: Wired) -> None:
    _, checkout = wired.service.create_order(NewOrder(DIRECT.mchid, "BAD-1", OrderTerms(500, "tea", "native")))
    wired.pay(checkout.payment.out_trade_no)
    wired.wait_until(lambda: status(wired, DIRECT.mchid, "BAD-1") == "PAID")
    headers, body = _captured(wired, "BAD-1")
    merchant_key = wired.client.merchant(DIRECT.mchid).private_key
    forged = headers | {
        "Wechatpay-Timestamp": str(int(time.time())),
        "Wechatpay-Signature": signing.sign(
            merchant_key, signing.response_message(str(int(time.time())), headers["Wechatpay-Nonce"], body)
        ),
    }
    cases: list[tuple[str, dict[str, str], bytes, type]] = [
        ("forged", forged, body, SignatureError),
        ("stale", _sign(wired, headers, body, int(time.time()) - 301), body, SignatureError),
        ("probe", headers | {"Wechatpay-Signature": "WECHATPAY/SIGNTEST/abc"}, body, SignatureError),
        ("tampered", _sign(wired, headers, _tamper(body)), _tamper(body), SignatureError),
        ("junk", _sign(wired, headers, b"not json"), b"not json", CallbackRejected),
    ]
    before = wired.ledger.recorder.max_notification_id()
    for _name, bad_headers, bad_body, error in cases:
        with pytest.raises(error):
            wired.callbacks.handle(Arrival("/wechatpay/v3/notify", "203.0.113.9", bad_headers, bad_body))
    refused = Audit(wired.ledger).refused_callbacks()
    assert len(refused) == len(cases)
    assert all(r.remote == "203.0.113.9" and r.path == "/wechatpay/v3/notify" and r.reason for r in refused)
    assert "SIGNTEST" in refused[2].reason
    positions = wired.ledger.recorder.select_notifications(before + 1, 100)
    assert {n.topic for n in positions} == {"zhangben.RefusedCallback.Created"}  # nothing else changed


def _resource_callback(wired: Wired, resource: dict[str, Any]) -> Arrival:
    merchant = wired.client.merchant(DIRECT.mchid)
    nonce = "0123456789ab"
    envelope = {
        "id": "EV-test",
        "create_time": "2026-11-22T10:00:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": {
            "original_type": "transaction",
            "algorithm": "AEAD_AES_256_GCM",
            "nonce": nonce,
            "associated_data": "transaction",
            "ciphertext": signing.aead_encrypt(merchant.apiv3_key, nonce, "transaction", json.dumps(resource).encode()),
        },
    }
    body = json.dumps(envelope).encode()
    return Arrival(
        "/wechatpay/v3/notify", "127.0.0.1", _sign(wired, {"Wechatpay-Signature-Type": signing.SCHEMA}, body), body
    )


def test_wrong_merchant_unknown_order_and_amount_mismatch(wired: Wired) -> None:
    _, checkout = wired.service.create_order(NewOrder(DIRECT.mchid, "AMT-1", OrderTerms(500, "tea", "native")))
    otn = checkout.payment.out_trade_no
    paid = {
        "mchid": DIRECT.mchid,
        "appid": DIRECT.appid,
        "out_trade_no": otn,
        "transaction_id": "4200000000000000000000000001",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "success_time": "2026-11-22T10:00:00+08:00",
        "amount": {"total": 499, "payer_total": 499, "currency": "CNY"},
    }
    with pytest.raises(CallbackRejected, match="mchid"):
        wired.callbacks.handle(_resource_callback(wired, paid | {"mchid": "1999999999"}))
    with pytest.raises(CallbackRefused, match="unknown out_trade_no"):
        wired.callbacks.handle(_resource_callback(wired, paid | {"out_trade_no": "zbUNKNOWN000000000000000001"}))
    assert status(wired, DIRECT.mchid, "AMT-1") == "PAYING"
    wired.callbacks.handle(_resource_callback(wired, paid))
    view = OrderReads(wired.ledger).order_view(DIRECT.mchid, "AMT-1")
    assert (
        view["status"] == "NEEDS_REVIEW" and view["review_reasons"] == ["amount_mismatch"] and view["paid_fen"] == 499
    )
    assert len(Audit(wired.ledger).refused_callbacks()) == 2


def test_every_translated_event_type_has_exactly_one_use_case(wired: Wired) -> None:
    """The adapter translates a type only if the application dispatches it, and the reverse."""
    assert set(wired.callbacks.dispatch) == set(TRANSLATIONS)
