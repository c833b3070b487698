"""A service provider onboards a sub-merchant through the API, whose shop sells an itemised order (issue 28).

Through HTTP against ``zhangben serve`` (SQLite; PostgreSQL × 2 workers): the provider's key adds the sub-merchant
(the sandbox told of it first, as WeChat is by the 进件), the sub-merchant's own key sells, WeChat's notification
on the sub-merchant's path pays, deactivation refuses new orders and leaves refunds working.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import httpx
import pytest

from sandbox.keyset import PARTNER
from tests.deploy import STORES, Deployment, sharing

SUB_APPID = "wx0123456789abcdef"
_numbers = itertools.count(1)


@pytest.fixture(scope="module", params=STORES)
def deployment(request: pytest.FixtureRequest) -> Deployment:
    return sharing(request)


def onboard(deployment: Deployment, **settings: Any) -> tuple[str, dict[str, Any]]:
    """A new sub-merchant of the test provider: registered at the sandbox (进件), then added through the API."""
    sub_mchid = f"19{int(time.time() * 1000) % 10**8:08d}{next(_numbers) % 100:02d}"
    registered = httpx.post(
        f"{deployment.sandbox}/sandbox/sub-merchants",
        json={"sp_mchid": PARTNER.mchid, "sub_mchid": sub_mchid, "sub_appids": [SUB_APPID]},
    )
    assert registered.status_code == 200, registered.text
    body = {"sub_mchid": sub_mchid, "name": "好茶小铺", "apps": [{"appid": SUB_APPID, "channels": ["jsapi"]}]}
    with deployment.client("provider") as http:
        added = http.post("/v1/sub-merchants", json=body | settings)
    assert added.status_code == 201, added.text
    return sub_mchid, added.json()


def shop(deployment: Deployment, key: str) -> httpx.Client:
    return httpx.Client(base_url=deployment.ledger, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def itemised(no: str, **change: Any) -> dict[str, Any]:
    return {
        "merchant_order_no": no,
        "amount_fen": 2 * 1800 + 990,
        "description": "奶茶两杯和蛋糕",
        "channel": "native",
        "user_id": "u-42",
        "items": [
            {"name": "珍珠奶茶", "quantity": 2, "unit_price_fen": 1800},
            {"name": "芝士蛋糕", "quantity": 1, "unit_price_fen": 990},
        ],
        "return_url": "https://shop.example.com/orders/done?from=pay",
        "currency": "CNY",
        "meta": {"coupon": "NEW10", "channel": {"campaign": "双十二"}},
    } | change


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_a_provider_onboards_a_shop_that_sells_an_itemised_order(deployment: Deployment) -> None:
    sub_mchid, added = onboard(deployment, return_url_hosts=["shop.example.com"], order_ttl_minutes=15)
    assert added["provider"] == PARTNER.mchid and added["active"] is True
    assert added["notify_url"].endswith(f"/wechatpay/v3/notify/{sub_mchid}")
    assert added["api_key"].startswith("zb_")
    with shop(deployment, added["api_key"]) as http:
        created = http.post("/v1/orders", json=itemised("SUB-1"))
        assert created.status_code == 201, created.text
        order = created.json()
        assert order["mchid"] == sub_mchid and order["currency"] == "CNY" and order["user_id"] == "u-42"
        assert [i["name"] for i in order["items"]] == ["珍珠奶茶", "芝士蛋糕"]
        assert order["meta"] == {"coupon": "NEW10", "channel": {"campaign": "双十二"}}
        assert order["return_url"] == "https://shop.example.com/orders/done?from=pay"
        lifetime = order["payment"]["expire_at"]  # the sub-merchant's own default: 15 minutes
        assert lifetime and order["expire_at"] == lifetime
        deployment.pay(order["payment"]["out_trade_no"])  # WeChat notifies on the sub-merchant's own path
        paid = wait_for(lambda: http.get("/v1/orders/SUB-1").json()["status"] == "PAID")
        assert paid, http.get("/v1/orders/SUB-1").json()
        # the feed (and so every webhook) carries the order view with its checkout fields
        feed = wait_for(
            lambda: [
                e for e in http.get("/v1/events", params={"wait": 0}).json()["events"] if e["type"] == "order.paid"
            ]
        )
        assert feed and feed[0]["data"]["order"]["items"] == order["items"], feed
        assert feed[0]["data"]["order"]["meta"] == order["meta"]
        # the same create again is the same order; the fields are part of it
        assert http.post("/v1/orders", json=itemised("SUB-1")).status_code == 200
        assert http.post("/v1/orders", json=itemised("SUB-1", user_id="u-43")).status_code == 409


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_fen": 4589}, "items"),  # the items add up to 4590
        ({"return_url": "https://evil.example.net/x"}, "return_url"),
        ({"return_url": "http://shop.example.com/x"}, "return_url"),
        ({"currency": "USD"}, "currency"),
        ({"meta": {"blob": "x" * 2100}}, "meta"),
        ({"items": [{"name": "茶", "quantity": 0, "unit_price_fen": 4590}]}, "items.0.quantity"),
        ({"items": [{"name": "茶", "quantity": 1, "unit_price_fen": 4590.0}]}, "items.0.unit_price_fen"),
    ],
)
def test_an_order_that_does_not_add_up_is_refused(deployment: Deployment, change: dict[str, Any], field: str) -> None:
    with deployment.client() as http:  # the direct merchant: its return hosts are none
        answer = http.post("/v1/orders", json=itemised(f"BAD-{next(_numbers)}", **change))
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field


def test_deactivated_refuses_new_orders_and_keeps_money_paths(deployment: Deployment) -> None:
    sub_mchid, added = onboard(deployment, return_url_hosts=["shop.example.com"])
    with shop(deployment, added["api_key"]) as http, deployment.client("provider") as provider:
        order = http.post("/v1/orders", json=itemised("SUB-OFF-1")).json()
        deployment.pay(order["payment"]["out_trade_no"])
        assert wait_for(lambda: http.get("/v1/orders/SUB-OFF-1").json()["status"] == "PAID")
        unpaid = http.post("/v1/orders", json=itemised("SUB-OFF-0")).json()
        changed = provider.patch(f"/v1/sub-merchants/{sub_mchid}", json={"active": False})
        assert changed.status_code == 200 and changed.json()["active"] is False
        # every worker sees it within seconds (PostgreSQL runs two)
        refused = wait_for(
            lambda: all(http.post("/v1/orders", json=itemised(f"SUB-OFF-{n}")).status_code == 403 for n in (2, 3, 4))
        )
        assert refused
        problem = http.post("/v1/orders", json=itemised("SUB-OFF-5")).json()
        assert problem["status"] == 403 and "deactivated" in problem["detail"]
        refund = http.post("/v1/orders/SUB-OFF-1/refunds", json={"amount_fen": 990, "reason": "蛋糕售罄"})
        assert refund.status_code in (201, 202), refund.text
        # a payer who scanned before the deactivation pays: WeChat's notification is taken, the money recorded
        deployment.pay(unpaid["payment"]["out_trade_no"])
        assert wait_for(lambda: http.get("/v1/orders/SUB-OFF-0").json()["status"] == "PAID")
        detail = provider.get(f"/v1/sub-merchants/{sub_mchid}").json()
        assert [h["type"] for h in detail["history"]] == ["Created", "Changed"]
        assert detail["history"][1]["changes"] == {"active": False}
        assert detail["history"][1]["by"].startswith("provider ")


def test_provider_routes_belong_to_providers(deployment: Deployment) -> None:
    sub_mchid, added = onboard(deployment)
    with deployment.client() as merchant:
        assert merchant.get("/v1/sub-merchants").status_code == 403
    with deployment.client("provider") as provider:
        assert provider.post("/v1/orders", json=itemised("P-1")).status_code == 403
        listed = provider.get("/v1/sub-merchants").json()["sub_merchants"]
        assert sub_mchid in [s["sub_mchid"] for s in listed]
        again = provider.post(
            "/v1/sub-merchants", json={"sub_mchid": sub_mchid, "name": "好茶小铺", "apps": added["apps"]}
        )
        assert again.status_code == 200 and "api_key" not in again.json()
        other = provider.post("/v1/sub-merchants", json={"sub_mchid": sub_mchid, "name": "另一家"})
        assert other.status_code == 409
        assert provider.get("/v1/sub-merchants/1999999999").status_code == 404
        bad = provider.post("/v1/sub-merchants", json={"sub_mchid": "12", "name": "x"})
        assert bad.status_code == 422
        key = provider.post(f"/v1/sub-merchants/{sub_mchid}/api-keys")
        assert key.status_code == 201 and key.json()["api_key"].startswith("zb_")


@pytest.mark.parametrize("key", ["merchant", "v2"])
def test_an_order_is_found_by_wechats_transaction_id(deployment: Deployment, key: str) -> None:
    """A payer's receipt names WeChat's number: the ledger finds the order by it, asking WeChat (v3
    /v3/pay/transactions/id/{id}, v2 orderquery with transaction_id) when the notification never came."""
    no = f"TXN-{key}-{next(_numbers)}"
    with deployment.client(key) as http:
        created = http.post(
            "/v1/orders", json={"merchant_order_no": no, "amount_fen": 500, "description": "茶", "channel": "native"}
        )
        assert created.status_code == 201, created.text
        deployment.faults(notifications="drop")
        try:
            paid = deployment.pay(created.json()["payment"]["out_trade_no"])
            transaction_id = paid["transaction_id"]
            found = http.get("/v1/orders", params={"transaction_id": transaction_id})
            assert found.status_code == 200, found.text
            (order,) = found.json()["orders"]
            assert order["merchant_order_no"] == no and order["status"] == "PAID"  # WeChat's answer was applied
            assert order["payments"][0]["transaction_id"] == transaction_id
        finally:
            deployment.faults(reset=True)
        again = http.get("/v1/orders", params={"transaction_id": transaction_id})  # now from the ledger's index
        assert again.json()["orders"][0]["merchant_order_no"] == no
        assert http.get("/v1/orders", params={"transaction_id": "4200000000000000000000000001"}).status_code == 404
        assert http.get("/v1/orders", params={"transaction_id": "42-00"}).status_code == 422
    with httpx.Client(base_url=deployment.ledger, follow_redirects=False) as console:  # the console's search box
        assert console.post("/console/login", data={"key": deployment.keys[key]}).status_code == 303
        found = console.get("/console", params={"q": transaction_id})
        assert found.status_code == 303 and found.headers["location"] == f"/console/orders/{no}"
        with deployment.client(key) as http:  # a number the ledger never heard of: the console asks WeChat too
            body = {"merchant_order_no": f"{no}-C", "amount_fen": 700, "description": "茶", "channel": "native"}
            unheard = http.post("/v1/orders", json=body)
            deployment.faults(notifications="drop")
            try:
                tid = deployment.pay(unheard.json()["payment"]["out_trade_no"])["transaction_id"]
                asked = console.get("/console", params={"q": tid})
            finally:
                deployment.faults(reset=True)
            assert asked.status_code == 303 and asked.headers["location"] == f"/console/orders/{no}-C"
    with deployment.client("partner" if key == "merchant" else "v2_partner") as other:  # another merchant's: absent
        assert other.get("/v1/orders", params={"transaction_id": transaction_id}).status_code == 404
