"""Seed 000's whole trip on the PC cashier page, in real headless Chromium: a QR code renewed by the page before it
expires, paid, the payer sent back to the shop; the "如已付款请稍等" hint.  On PostgreSQL only: the page's logic does
not depend on the store (tests/api/test_cashier_browser.py runs the page on both)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.api.test_cashier_browser import CHROMIUM, FLAGS, native_order
from tests.api.test_providers import itemised, onboard, shop
from tests.deploy import Deployment, sharing


@pytest.fixture(scope="module", params=["postgres"])
def deployment(request: pytest.FixtureRequest) -> Deployment:
    return sharing(request)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield instance
        instance.close()


def test_a_qr_renewed_before_expiry_is_paid_and_the_payer_returns_to_the_shop(
    deployment: Deployment, browser: Browser
) -> None:
    """Seed 000's trip: QR codes of a minute within a ten-minute order, renewed by the page itself; the renewed one
    paid; the payer sent back to the shop's return_url with a signature the shop verifies with the public key."""
    sub_mchid, added = onboard(deployment, qr_ttl_minutes=1, return_url_hosts=["shop.example.com"])
    with shop(deployment, added["api_key"]) as http:
        created = http.post("/v1/orders", json=itemised("WEB-RENEW"))
        assert created.status_code == 201, created.text
        first, link = created.json()["payment"]["out_trade_no"], created.json()["cashier_url"]
    page = browser.new_page()
    page.route("https://shop.example.com/**", lambda route: route.fulfill(body="<h1>好茶小铺: 订单完成</h1>"))
    page.clock.install()
    page.goto(link)
    assert page.locator("main").get_attribute("data-renewable") == "1"
    page.clock.fast_forward("00:45")  # 15 s left of the minute: the page renews the QR code by itself
    page.wait_for_function(f"document.querySelector('main').dataset.outTradeNo !== '{first}'", timeout=15000)
    renewed = page.locator("main").get_attribute("data-out-trade-no")
    assert renewed and renewed != first
    page.wait_for_function("document.getElementById('countdown').textContent.includes('后过期')")
    page.screenshot(path=str(deployment.root / "cashier-renewed.png"))
    with shop(deployment, added["api_key"]) as http:
        payments = http.get("/v1/orders/WEB-RENEW").json()["payments"]
    assert [(p["out_trade_no"], p["status"]) for p in payments] == [(first, "CLOSED"), (renewed, "PREPAID")]
    deployment.pay(renewed)
    page.wait_for_url("https://shop.example.com/**", timeout=20000)
    page.screenshot(path=str(deployment.root / "cashier-returned.png"))
    back = dict(parse_qsl(urlsplit(page.url).query))
    assert back["from"] == "pay" and back["merchant_order_no"] == "WEB-RENEW" and back["mchid"] == sub_mchid
    assert back["status"] == "PAID" and back["paid_fen"] == "4590"
    key = httpx.get(f"{deployment.ledger}/v1/return-key").json()
    assert verify_return(key["public_key_pem"], back) and back["kid"] == key["key_id"]
    assert not verify_return(key["public_key_pem"], back | {"paid_fen": "1"})  # a payer's edit is caught
    page.close()


def verify_return(public_pem: str, params: dict[str, str]) -> bool:
    """The receiver snippet of docs/api.md, written from the docs alone (not the ledger's code)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    fields = ("kid", "mchid", "merchant_order_no", "status", "paid_fen", "ts")
    signed = "\n".join(params[f] for f in fields).encode()
    sig = base64.urlsafe_b64decode(params["sig"] + "=" * (-len(params["sig"]) % 4))
    try:
        load_pem_public_key(public_pem.encode()).verify(sig, signed)  # type: ignore[union-attr,call-arg]
    except InvalidSignature:
        return False
    return abs(time.time() - int(params["ts"])) < 600


def test_after_90_seconds_the_page_says_wait_and_asks_wechat(deployment: Deployment, browser: Browser) -> None:
    otn, link = native_order(deployment, "WEB-WAIT-1")
    deployment.faults(notifications="drop")
    try:
        page = browser.new_page()
        page.clock.install()
        page.goto(link)
        assert page.locator("#hint").is_hidden()
        page.clock.fast_forward("01:31")
        page.wait_for_selector("#hint", state="visible", timeout=5000)
        assert page.text_content("#hint").startswith("如已付款请稍等")
        deployment.pay(otn)  # paid, and WeChat's notification lost: the page keeps asking WeChat, and finds it
        # its questions every ten seconds of its clock (the ledger asks WeChat at most every 3 s of its own)
        for _ in range(20):
            page.clock.fast_forward("00:10")
            if page.locator("main").get_attribute("data-status") == "PAID":
                break
            time.sleep(0.5)
        page.wait_for_function("document.querySelector('main').dataset.status === 'PAID'", timeout=15000)
        page.close()
    finally:
        deployment.faults(reset=True)
