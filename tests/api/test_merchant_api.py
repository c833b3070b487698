"""Every endpoint and status of docs/api.md, through HTTP against ``zhangben serve`` (SQLite; PostgreSQL × 2 workers)."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from adapters.secretbox import DataKeys
from adapters.sessions import SessionKeys
from adapters.viewdb import ViewDatabase
from sandbox.keyset import DIRECT, DIRECT_OA_APPID
from tests.deploy import Deployment, merchant_store, run_cli
from zhangben.demo import parse_metrics
from zhangben.launch import StackError

PROBLEM = "application/problem+json"


def order_body(no: str, **change: Any) -> dict[str, Any]:
    return {"merchant_order_no": no, "amount_fen": 1000, "description": "奶茶", "channel": "native"} | change


def is_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body) and body["status"] == status
    return body


def test_create_is_idempotent_and_conflicts_on_a_different_body(deployment: Deployment) -> None:
    with deployment.client() as http:
        first = http.post("/v1/orders", json=order_body("API-C1"))
        assert first.status_code == 201
        order = first.json()
        assert order["status"] == "PAYING" and order["amount_fen"] == 1000 and order["version"] >= 3
        assert order["payment"]["code_url"].startswith("weixin://") and order["payment"]["expire_at"]
        again = http.post("/v1/orders", json=order_body("API-C1"))
        assert again.status_code == 200 and again.json()["payment"] == order["payment"]
        is_problem(http.post("/v1/orders", json=order_body("API-C1", amount_fen=999)), 409)


def test_idempotency_key(deployment: Deployment) -> None:
    with deployment.client() as http:
        headers = {"Idempotency-Key": "key-API-I1"}
        assert http.post("/v1/orders", json=order_body("API-I1"), headers=headers).status_code == 201
        assert http.post("/v1/orders", json=order_body("API-I1"), headers=headers).status_code == 200
        is_problem(http.post("/v1/orders", json=order_body("API-I2"), headers=headers), 409)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_fen": 10.5}, "amount_fen"),
        ({"amount_fen": "1000"}, "amount_fen"),
        ({"amount_fen": 0}, "amount_fen"),
        ({"amount_fen": -1}, "amount_fen"),
        ({"amount_fen": None}, "amount_fen"),
        ({"amount_fen": True}, "amount_fen"),
        ({"channel": "alipay"}, "channel"),
        ({"expire_seconds": 30}, "expire_seconds"),
        ({"merchant_order_no": "has space"}, "merchant_order_no"),
        ({"channel": "jsapi"}, "payer_openid"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(deployment: Deployment, change: dict[str, Any], field: str) -> None:
    body = order_body("API-V1", **change)
    if change.get("amount_fen") is None and "amount_fen" in change:
        del body["amount_fen"]
    with deployment.client() as http:
        problem = is_problem(http.post("/v1/orders", json=body), 422)
        assert problem["field"] == field
        is_problem(http.get("/v1/orders/API-V1"), 404)  # nothing was created


def test_keys_and_roles(deployment: Deployment) -> None:
    with deployment.client() as http:
        http.post("/v1/orders", json=order_body("API-R1"))
    with deployment.client(role="") as anonymous:
        is_problem(anonymous.get("/v1/orders/API-R1"), 401)
        is_problem(anonymous.get("/v1/orders/API-R1", headers={"Authorization": "Bearer zb_0000000000000000_x"}), 401)
    with deployment.client("auditor") as auditor:
        is_problem(auditor.get("/v1/orders/API-R1"), 403)
    with deployment.client("finance") as finance:
        is_problem(finance.post("/v1/orders", json=order_body("API-R2")), 403)
    with deployment.client("partner") as other_merchant:
        is_problem(other_merchant.get("/v1/orders/API-R1"), 404)  # exactly as for an order that does not exist
        is_problem(other_merchant.get("/v1/orders/NO-SUCH-ORDER"), 404)


def test_pay_watch_and_long_poll(deployment: Deployment) -> None:
    with deployment.client() as http:
        created = http.post("/v1/orders", json=order_body("API-P1")).json()
        version = created["version"]
        seen: list[dict[str, Any]] = []

        def long_poll() -> None:
            seen.append(http.get("/v1/orders/API-P1", params={"wait": 10, "after_version": version}).json())

        poller = threading.Thread(target=long_poll)
        poller.start()
        time.sleep(0.3)
        deployment.pay(created["payment"]["out_trade_no"])
        poller.join(timeout=15)
        assert seen and seen[0]["version"] > version
        view = deployment.wait_status("API-P1", "PAID")
        assert view["paid_fen"] == 1000 and view["payments"][0]["transaction_id"].startswith("42")
        assert view["paid_at"]


def test_sse_sees_paying_then_paid_within_a_second(deployment: Deployment) -> None:
    with deployment.client() as http:
        created = http.post("/v1/orders", json=order_body("API-S1")).json()
        events: list[tuple[float, dict[str, Any]]] = []

        def listen() -> None:
            with (
                httpx.Client(base_url=deployment.ledger, headers=http.headers, timeout=30) as stream_http,
                stream_http.stream("GET", "/v1/orders/API-S1/stream") as response,
            ):
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        events.append((time.monotonic(), json.loads(line[6:])))

        listener = threading.Thread(target=listen)
        listener.start()
        deadline = time.monotonic() + 10
        while not events and time.monotonic() < deadline:
            time.sleep(0.02)
        paid_at = time.monotonic()
        deployment.pay(created["payment"]["out_trade_no"])
        listener.join(timeout=15)
        assert not listener.is_alive(), "the stream did not end at a final state"
        statuses = [e[1]["status"] for e in events]
        assert statuses[0] == "PAYING" and statuses[-1] == "PAID"
        assert events[-1][0] - paid_at < 1.0


def test_list_filters_and_cursor(deployment: Deployment) -> None:
    with deployment.client("partner") as http:  # its own merchant: a clean list
        for i in range(3):
            assert http.post("/v1/orders", json=order_body(f"API-L{i}")).status_code == 201
        page = http.get("/v1/orders", params={"limit": 2}).json()
        assert [o["merchant_order_no"] for o in page["orders"]] == ["API-L2", "API-L1"] and page["next_cursor"]
        rest = http.get("/v1/orders", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        assert [o["merchant_order_no"] for o in rest["orders"]] == ["API-L0"] and rest["next_cursor"] is None
        assert http.get("/v1/orders", params={"status": "PAID"}).json()["orders"] == []
        assert len(http.get("/v1/orders", params={"status": "PAYING"}).json()["orders"]) == 3
        future = http.get("/v1/orders", params={"created_from": "2099-01-01T00:00:00+08:00"}).json()
        assert future["orders"] == []
        assert len(http.get("/v1/orders", params={"created_to": "2099-01-01T00:00:00+08:00"}).json()["orders"]) == 3
        is_problem(http.get("/v1/orders", params={"status": "SHIPPED"}), 422)
        is_problem(http.get("/v1/orders", params={"cursor": "bm9wZQ"}), 422)
        is_problem(http.get("/v1/orders", params={"limit": 0}), 422)


def test_sync_heals_a_dropped_notification(deployment: Deployment) -> None:
    deployment.faults(notifications="drop")
    try:
        with deployment.client() as http:
            created = http.post("/v1/orders", json=order_body("API-Y1")).json()
            deployment.pay(created["payment"]["out_trade_no"])
            time.sleep(0.3)
            assert http.get("/v1/orders/API-Y1").json()["status"] == "PAYING"
            assert http.post("/v1/orders/API-Y1/sync").json()["status"] == "PAID"
    finally:
        deployment.faults(reset=True)


def test_close_and_new_attempts(deployment: Deployment) -> None:
    with deployment.client() as http:
        http.post("/v1/orders", json=order_body("API-X1"))
        assert http.post("/v1/orders/API-X1/close").json()["status"] == "CLOSED"
        is_problem(http.post("/v1/orders/API-X1/payments", json={}), 409)
        created = http.post("/v1/orders", json=order_body("API-X2")).json()
        again = http.post("/v1/orders/API-X2/payments", json={"channel": "jsapi", "payer_openid": "oPayerX2"})
        assert again.status_code == 201
        attempt = again.json()["payment"]
        assert attempt["out_trade_no"] != created["payment"]["out_trade_no"] and attempt["pay_params"]["paySign"]
        deployment.pay(attempt["out_trade_no"])
        deployment.wait_status("API-X2", "PAID")
        is_problem(http.post("/v1/orders/API-X2/close"), 409)
        is_problem(http.post("/v1/orders/API-X2/payments", json={}), 409)


def test_six_concurrent_new_attempts_leave_one_payable(deployment: Deployment) -> None:
    with deployment.client() as http:
        first = http.post("/v1/orders", json=order_body("API-RACE")).json()["payment"]["out_trade_no"]
    barrier = threading.Barrier(6)
    answers: list[httpx.Response] = []

    def new_attempt() -> None:
        with deployment.client() as client:
            barrier.wait()
            answers.append(client.post("/v1/orders/API-RACE/payments", json={}))

    threads = [threading.Thread(target=new_attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [a for a in answers if a.status_code == 201]
    assert len(won) >= 1 and all(a.status_code in (201, 409) for a in answers), [a.text for a in answers]
    with deployment.client() as http:
        view = http.get("/v1/orders/API-RACE").json()
    payable = [p for p in view["payments"] if p["status"] in ("CREATED", "PREPAID")]
    assert len(payable) == 1, view["payments"]
    assert payable[0]["out_trade_no"] in {w.json()["payment"]["out_trade_no"] for w in won}
    # at WeChat too: every other attempt, the first included, is closed there
    for p in view["payments"]:
        state = httpx.get(f"{deployment.sandbox}/sandbox/orders/{p['out_trade_no']}").json()["state"]
        assert state == ("NOTPAY" if p["out_trade_no"] == payable[0]["out_trade_no"] else "CLOSED"), (p, state)
    assert first != payable[0]["out_trade_no"]


def test_refunds(deployment: Deployment) -> None:
    with deployment.client() as http:
        created = http.post("/v1/orders", json=order_body("API-F1")).json()
        deployment.pay(created["payment"]["out_trade_no"])
        deployment.wait_status("API-F1", "PAID")
        refund = http.post("/v1/orders/API-F1/refunds", json={"out_refund_no": "API-F1-R1", "amount_fen": 400})
        assert refund.status_code == 202 and refund.json()["status"] == "PROCESSING"
        again = http.post("/v1/orders/API-F1/refunds", json={"out_refund_no": "API-F1-R1", "amount_fen": 400})
        assert again.status_code == 202 and again.json()["refund_id"] == refund.json()["refund_id"]
        is_problem(http.post("/v1/orders/API-F1/refunds", json={"amount_fen": 601}), 409)
        is_problem(http.post("/v1/orders/API-F1/refunds", json={"amount_fen": 1.5}), 422)
        generated = http.post("/v1/orders/API-F1/refunds", json={"amount_fen": 600}).json()
        assert generated["out_refund_no"]
        deadline = time.monotonic() + 10
        while http.get(f"/v1/refunds/{generated['out_refund_no']}").json()["status"] != "SUCCESS":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        deployment.wait_status("API-F1", "REFUNDED")
        is_problem(http.get("/v1/refunds/NO-SUCH-REFUND"), 404)
    # the evidence (issue 23, point 5): what the ledger asked WeChat and what WeChat answered, in the history
    history = json.loads(deployment.cli("history", "API-F1", "--merchant", DIRECT.mchid, "--json"))["events"]
    calls = [(e["aggregate"], e["data"]["exchange"]) for e in history if e["type"] == "WechatCalled"]
    prepay = [x for aggregate, x in calls if aggregate == "Payment" and x["endpoint"] == "prepay"]
    refunds = [x for aggregate, x in calls if aggregate == "Refund" and x["endpoint"] == "refund"]
    assert len(prepay) == 1 and prepay[0]["status"] == 200 and "code_url" in prepay[0]["response_body"]
    assert len(refunds) == 2 and {x["status"] for x in refunds} == {200}
    first = next(x for x in refunds if "API-F1-R1" in x["request_body"])
    assert first["method"] == "POST" and first["url"].endswith("/v3/refund/domestic/refunds")
    assert refund.json()["refund_id"] in first["response_body"]  # WeChat's answer, as it came
    assert {"wechatpay-signature", "wechatpay-serial", "wechatpay-timestamp"} <= set(first["response_headers"])
    assert "authorization" not in json.dumps(calls).lower()  # our own signature is never kept
    with deployment.client("auditor") as auditor:  # the auditor's API shows the same
        audited = auditor.get("/v1/audit/orders/API-F1/history").json()["events"]
        assert [e["data"] for e in audited if e["type"] == "WechatCalled"] == [
            e["data"] for e in history if e["type"] == "WechatCalled"
        ]


def test_miniprogram_login(deployment: Deployment) -> None:
    code = httpx.post(
        f"{deployment.sandbox}/sandbox/wx-login", json={"appid": DIRECT.appid, "openid": "oMiniApi1"}
    ).json()["code"]
    with deployment.client() as http:
        answer = http.post("/v1/wechat/miniprogram/login", json={"code": code})
        assert answer.status_code == 200 and answer.json() == {"openid": "oMiniApi1"}
        is_problem(http.post("/v1/wechat/miniprogram/login", json={"code": code}), 409)  # single use
        is_problem(http.post("/v1/wechat/miniprogram/login", json={}), 422)
    # the session key is kept in the database, for every worker and after a restart; never answered or logged
    db = ViewDatabase(merchant_store(deployment, DIRECT.mchid))
    try:
        [(sealed,)] = db.execute(
            "SELECT session_key FROM miniprogram_sessions WHERE appid = ? AND openid = ?", (DIRECT.appid, "oMiniApi1")
        )
        session_key = SessionKeys(db, DataKeys(deployment.root / "keys" / "data_key")).get(DIRECT.appid, "oMiniApi1")
    finally:
        db.close()
    assert sealed.startswith("zb1:") and session_key is not None and len(base64.b64decode(session_key)) == 16
    assert session_key not in (deployment.root / "processes.log").read_text(encoding="utf-8", errors="replace")


def pay_sign_holds(deployment: Deployment, params: dict[str, str]) -> bool:
    """``paySign`` verifies with the merchant's key, over the appId it names (docs/wechatpay-protocol.md §5)."""
    key = load_pem_private_key((deployment.root / "keys" / DIRECT.mchid / "apiclient_key.pem").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    message = f"{params['appId']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n".encode()
    key.public_key().verify(base64.b64decode(params["paySign"]), message, padding.PKCS1v15(), hashes.SHA256())
    return True


def seen_by_wechat(deployment: Deployment, out_trade_no: str) -> dict[str, Any]:
    answer = httpx.get(f"{deployment.sandbox}/sandbox/orders/{out_trade_no}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_two_apps_under_one_mchid_each_order_signed_for_its_own(deployment: Deployment) -> None:
    with deployment.client() as http:
        jsapi = http.post("/v1/orders", json=order_body("API-APP1", channel="jsapi", payer_openid="oOA1")).json()
        mini = http.post("/v1/orders", json=order_body("API-APP2", channel="miniprogram", payer_openid="oMini1")).json()
        for answer, appid in ((jsapi, DIRECT_OA_APPID), (mini, DIRECT.appid)):
            params = answer["payment"]["pay_params"]
            assert params["appId"] == appid and pay_sign_holds(deployment, params)
            assert seen_by_wechat(deployment, answer["payment"]["out_trade_no"])["appid"] == appid
        named = http.post("/v1/orders", json=order_body("API-APP3", appid=DIRECT_OA_APPID))
        assert named.status_code == 201, named.text
        assert seen_by_wechat(deployment, named.json()["payment"]["out_trade_no"])["appid"] == DIRECT_OA_APPID
        again = http.post("/v1/orders/API-APP3/payments", json={"channel": "jsapi", "payer_openid": "oOA9"})
        assert again.status_code == 201 and again.json()["payment"]["pay_params"]["appId"] == DIRECT_OA_APPID
        unknown = is_problem(http.post("/v1/orders", json=order_body("API-APP4", appid="wx0000000000000000")), 422)
        assert unknown["field"] == "appid"
        # paid through the 公众号: WeChat's notification names that appid, and it is the merchant's
        deployment.pay(jsapi["payment"]["out_trade_no"])
        deployment.wait_status("API-APP1", "PAID")


def test_oauth_code_to_openid_to_a_jsapi_order(deployment: Deployment) -> None:
    with deployment.client() as http:
        answer = http.get(
            "/v1/wechat/oauth/authorize-url",
            params={"redirect_uri": "https://shop.example.com/pay?o=API-OA1", "state": "s1"},
        ).json()
        assert answer["appid"] == DIRECT_OA_APPID and answer["url"].endswith("#wechat_redirect")
        assert "scope=snsapi_base" in answer["url"] and answer["url"].startswith(deployment.sandbox)
        # the payer's browser at WeChat (the sandbox plays payer oOAuth1), sent back to the shop's page
        back = httpx.get(answer["url"].split("#")[0] + "&openid=oOAuth1", follow_redirects=False)
        assert back.status_code == 302, back.text
        location = urlsplit(back.headers["location"])
        query = parse_qs(location.query)
        assert (location.netloc, query["o"], query["state"]) == ("shop.example.com", ["API-OA1"], ["s1"])
        got = http.post("/v1/wechat/oauth/openid", json={"code": query["code"][0]})
        assert got.status_code == 200 and got.json() == {"openid": "oOAuth1", "appid": DIRECT_OA_APPID}
        is_problem(http.post("/v1/wechat/oauth/openid", json={"code": query["code"][0]}), 409)  # single use
        order = http.post("/v1/orders", json=order_body("API-OA1", channel="jsapi", payer_openid="oOAuth1"))
        assert order.status_code == 201 and order.json()["payment"]["pay_params"]["appId"] == DIRECT_OA_APPID
        assert seen_by_wechat(deployment, order.json()["payment"]["out_trade_no"])["openid"] == "oOAuth1"
        # without a browser: the sandbox's control issues the code
        code = httpx.post(f"{deployment.sandbox}/sandbox/wx-oauth", json={"appid": DIRECT_OA_APPID, "openid": "oOA2"})
        assert http.post("/v1/wechat/oauth/openid", json={"code": code.json()["code"]}).json()["openid"] == "oOA2"
        bad = http.get("/v1/wechat/oauth/authorize-url", params={"redirect_uri": "javascript:alert(1)"})
        assert is_problem(bad, 422)["field"] == "redirect_uri"
        is_problem(http.post("/v1/wechat/oauth/openid", json={"code": "nope"}), 409)


def test_h5_sends_the_peer_when_no_proxy_is_trusted(deployment: Deployment) -> None:
    with deployment.client() as http:
        forged = {"X-Forwarded-For": "203.0.113.66", "X-Real-IP": "203.0.113.67"}
        h5 = http.post("/v1/orders", json=order_body("API-IP1", channel="h5"), headers=forged).json()
        assert seen_by_wechat(deployment, h5["payment"]["out_trade_no"])["payer_client_ip"] == "127.0.0.1"
        named = http.post("/v1/orders", json=order_body("API-IP2", channel="h5", payer_client_ip="198.51.100.7"))
        assert seen_by_wechat(deployment, named.json()["payment"]["out_trade_no"])["payer_client_ip"] == "198.51.100.7"
        bad = is_problem(
            http.post("/v1/orders", json=order_body("API-IP3", channel="h5", payer_client_ip="1.2.3")), 422
        )
        assert bad["field"] == "payer_client_ip"


def test_audit_history(deployment: Deployment) -> None:
    with deployment.client() as http:
        created = http.post("/v1/orders", json=order_body("API-A1")).json()
        time.sleep(0.05)
        before_payment = datetime.now(UTC).isoformat()
        time.sleep(0.05)
        deployment.pay(created["payment"]["out_trade_no"])
        deployment.wait_status("API-A1", "PAID")
    with deployment.client("auditor") as auditor:
        history = auditor.get("/v1/audit/orders/API-A1/history").json()
        kinds = [(e["aggregate"], e["type"]) for e in history["events"]]
        assert ("Payment", "Notified") in kinds and ("Order", "Paid") in kinds and history["state"]["status"] == "PAID"
        assert all({"aggregate", "id", "type", "version", "timestamp", "data"} <= set(e) for e in history["events"])
        past = auditor.get("/v1/audit/orders/API-A1/history", params={"as_of": before_payment}).json()
        assert past["state"]["status"] == "PAYING" and ("Order", "Paid") not in [
            (e["aggregate"], e["type"]) for e in past["events"]
        ]
    with deployment.client() as merchant:
        is_problem(merchant.get("/v1/audit/orders/API-A1/history"), 403)


def test_operations(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.ledger) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        text = http.get("/metrics").text
        assert "zhangben_http_requests_total" in text and "zhangben_orders" in text

        def healthz_count() -> float:
            samples = parse_metrics(http.get("/metrics").text)
            return samples.get(
                ("zhangben_http_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200"))), 0
            )

        before = healthz_count()
        for _ in range(40):  # new connections: spread over every worker
            assert httpx.get(f"{deployment.ledger}/healthz").status_code == 200
        assert healthz_count() == before + 40  # one scrape sums all the workers, whichever answers it
    # every worker logs a JSON access line with its request id (issue 23, point 9: `--workers 2` logged none)
    lines = (deployment.root / "processes.log").read_text(encoding="utf-8", errors="replace").splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    access = [e for e in entries if e.get("route") == "/healthz" and e.get("status") == 200]
    assert len(access) >= 40 and all(e["request_id"] and e["logger"] == "zhangben.http" for e in access), lines[-20:]
    with httpx.Client(base_url=deployment.ledger) as http:
        assert http.get("/openapi.json").json()["info"]["title"] == "zhangben"
        assert http.get("/docs").status_code == 200


def test_api_keys_are_listed_rotated_and_revoked_at_once_in_every_worker(deployment: Deployment) -> None:
    key = run_cli(
        deployment, "apikey", "create", "--merchant", DIRECT.mchid, "--role", "merchant", "--expires-in-days", "30"
    )
    key_id = key[3:19]
    listed = run_cli(deployment, "apikey", "list", "--merchant", DIRECT.mchid)
    assert key_id in listed and key not in listed and "expires" in listed

    def statuses(k: str) -> set[int]:  # several requests: both workers answer on PostgreSQL
        return {
            httpx.get(f"{deployment.ledger}/v1/orders", headers={"Authorization": f"Bearer {k}"}).status_code
            for _ in range(8)
        }

    assert statuses(key) == {200}
    new = run_cli(deployment, "apikey", "rotate", key_id, "--grace-hours", "1")
    assert new.startswith("zb_") and new != key
    assert statuses(key) == {200} and statuses(new) == {200}  # the old one during its grace period
    run_cli(deployment, "apikey", "revoke", key_id)
    assert statuses(key) == {401} and statuses(new) == {200}
    run_cli(deployment, "apikey", "revoke", key_id)  # again: nothing changes
    newer = run_cli(deployment, "apikey", "rotate", new[3:19], "--grace-hours", "0")
    assert statuses(new) == {401} and statuses(newer) == {200}
    states = run_cli(deployment, "apikey", "list")
    assert f"{key_id}" in states and "revoked" in states and "expired" in states
    with pytest.raises(StackError, match="not found"):
        run_cli(deployment, "apikey", "revoke", "0123456789abcdef")
    with pytest.raises(StackError, match="is not a key id"):
        run_cli(deployment, "apikey", "revoke", "nope")
    with pytest.raises(StackError, match="revoked or expired"):
        run_cli(deployment, "apikey", "rotate", key_id)


def test_every_time_shown_is_beijing_time_with_its_offset(deployment: Deployment) -> None:
    with deployment.client() as http, deployment.client("auditor") as auditor:
        created = http.post("/v1/orders", json=order_body("API-TZ1")).json()
        deployment.pay(created["payment"]["out_trade_no"])
        view = deployment.wait_status("API-TZ1", "PAID")
        shown = [view["created_at"], view["paid_at"], view["expire_at"], view["payments"][0]["created_at"]]
        shown.append(created["payment"]["expire_at"])  # the create answer's attempt (issue 23, point 9)
        history = auditor.get("/v1/audit/orders/API-TZ1/history").json()
        shown += [e["timestamp"] for e in history["events"]]
        events = http.get("/v1/events", params={"type": "order.paid", "limit": 500}).json()["events"]
        shown += [e["created_at"] for e in events if e["merchant_order_no"] == "API-TZ1"]
        endpoint = http.post("/v1/webhook-endpoints", json={"url": "https://shop.example.com/tz"}).json()
        shown.append(endpoint["created_at"])
    with deployment.client("v2") as v2:  # a product (Native mode 1 is a v2 merchant's)
        product = v2.post("/v1/products", json={"product_id": "tz-1", "amount_fen": 100, "description": "茶"}).json()
        shown += [product["created_at"], product["updated_at"]]
    with deployment.client() as http:
        assert http.delete(f"/v1/webhook-endpoints/{endpoint['id']}").status_code == 204
    assert len(shown) > 6 and all(s.endswith("+08:00") for s in shown), shown
    printed = deployment.cli("history", "API-TZ1", "--merchant", DIRECT.mchid)
    assert "time (Beijing, +08:00)" in printed
