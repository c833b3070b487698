"""The PC cashier page in real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.deploy import Deployment

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not shutil.which("chromium"):
        pytest.fail(
            "Chromium is not installed: `make test` installs Debian's chromium when run as root; "
            "otherwise apt-get install chromium",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield instance
        instance.close()


def native_order(deployment: Deployment, no: str, **extra: Any) -> str:
    with deployment.client() as http:
        created = http.post(
            "/v1/orders",
            json={"merchant_order_no": no, "amount_fen": 1234, "description": "奶茶两杯", "channel": "native"} | extra,
        )
        assert created.status_code == 201, created.text
        return created.json()["payment"]["out_trade_no"]


def test_the_page_shows_the_order_and_turns_paid_live(deployment: Deployment, browser: Browser) -> None:
    otn = native_order(deployment, "WEB-1")
    page = browser.new_page()
    page.goto(f"{deployment.ledger}/pay/{otn}")
    assert page.text_content("#amount") == "¥12.34"
    assert page.text_content("h1") == "奶茶两杯"
    assert page.locator("#qr svg").count() == 1
    assert page.text_content("#status") == "请使用微信扫一扫付款"
    page.wait_for_function("document.getElementById('countdown').textContent.includes('后过期')")
    started = time.monotonic()
    deployment.pay(otn)
    page.wait_for_function("document.querySelector('main').dataset.status === 'PAID'", timeout=5000)
    assert time.monotonic() - started < 2.0
    assert page.text_content("#status") == "支付成功"
    assert page.locator("#qr").is_hidden() and page.locator("#paid").is_hidden()
    page.screenshot(path=str(deployment.root / "cashier-paid.png"))
    page.close()


def test_i_have_paid_asks_wechat(deployment: Deployment, browser: Browser) -> None:
    otn = native_order(deployment, "WEB-2")
    deployment.faults(notifications="drop")
    try:
        page = browser.new_page()
        page.goto(f"{deployment.ledger}/pay/{otn}")
        deployment.pay(otn)
        time.sleep(0.3)
        assert page.text_content("#status") == "请使用微信扫一扫付款"  # no notification came
        page.click("#paid")
        page.wait_for_function("document.querySelector('main').dataset.status === 'PAID'", timeout=5000)
        page.close()
    finally:
        deployment.faults(reset=True)


def test_an_expired_qr_can_be_refreshed(deployment: Deployment, browser: Browser) -> None:
    otn = native_order(deployment, "WEB-3", expire_seconds=60)
    page = browser.new_page()
    page.clock.install()  # the page's own clock: jump past the expiry without waiting a minute
    page.goto(f"{deployment.ledger}/pay/{otn}")
    page.clock.fast_forward("01:05")
    page.wait_for_selector("#refresh", state="visible", timeout=5000)
    assert page.text_content("#countdown") == "二维码已过期"
    # the server decides on expiry by its own clock: a refresh before it is refused
    early = httpx.post(f"{deployment.ledger}/pay/{otn}/refresh")
    assert early.status_code == 409
    page.close()


def test_unknown_payment_is_a_404(deployment: Deployment) -> None:
    assert httpx.get(f"{deployment.ledger}/pay/zbffffffffffffffffffffffff01").status_code == 404
