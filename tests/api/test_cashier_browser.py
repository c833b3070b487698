"""The PC cashier page in real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from adapters import capabilities
from domain import ids
from sandbox.keyset import DIRECT
from tests.deploy import STORES, Deployment, sharing


@pytest.fixture(scope="module", params=STORES)
def deployment(request: pytest.FixtureRequest) -> Deployment:
    """This module shares the session's deployment: its orders are its own, it moves no clock."""
    return sharing(request)


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


def native_order(deployment: Deployment, no: str, **extra: Any) -> tuple[str, str]:
    """The new attempt's out_trade_no, and the payer's link (``cashier_url``) from the create answer."""
    with deployment.client() as http:
        created = http.post(
            "/v1/orders",
            json={"merchant_order_no": no, "amount_fen": 1234, "description": "奶茶两杯", "channel": "native"} | extra,
        )
        assert created.status_code == 201, created.text
        return created.json()["payment"]["out_trade_no"], created.json()["cashier_url"]


def test_the_page_shows_the_order_and_turns_paid_live(deployment: Deployment, browser: Browser) -> None:
    otn, link = native_order(deployment, "WEB-1")
    page = browser.new_page()
    page.goto(link)
    assert page.text_content("#amount") == "¥12.34"
    assert page.text_content("h1") == "奶茶两杯"
    assert page.locator("#qr svg").count() == 1
    assert page.text_content("#status") == "请使用微信扫一扫付款"
    page.wait_for_function("document.getElementById('countdown').textContent.includes('后过期')")
    deployment.pay(otn)
    # live: the page turns paid by itself, without a reload (the wait's deadline detects a page that never does)
    page.wait_for_function("document.querySelector('main').dataset.status === 'PAID'", timeout=15000)
    assert page.text_content("#status") == "支付成功"
    assert page.locator("#qr").is_hidden() and page.locator("#paid").is_hidden()
    page.screenshot(path=str(deployment.root / "cashier-paid.png"))
    page.close()


def test_i_have_paid_asks_wechat(deployment: Deployment, browser: Browser) -> None:
    otn, link = native_order(deployment, "WEB-2")
    deployment.faults(notifications="drop")
    try:
        page = browser.new_page()
        page.goto(link)
        deployment.pay(otn)
        time.sleep(0.3)
        assert page.text_content("#status") == "请使用微信扫一扫付款"  # no notification came
        page.click("#paid")
        # the query makes it paid at once; the view the page reads follows from the work process, seconds behind
        # on a loaded machine (CI once took over 5 s) -- without the click it never turns paid at all
        page.wait_for_function("document.querySelector('main').dataset.status === 'PAID'", timeout=15000)
        page.close()
    finally:
        deployment.faults(reset=True)


def test_an_expired_qr_can_be_refreshed(deployment: Deployment, browser: Browser) -> None:
    otn, link = native_order(deployment, "WEB-3", expire_seconds=60)
    page = browser.new_page()
    page.clock.install()  # the page's own clock: jump past the expiry without waiting a minute
    page.goto(link)
    page.clock.fast_forward("01:05")
    page.wait_for_selector("#refresh", state="visible", timeout=5000)
    assert page.text_content("#countdown") == "二维码已过期"
    # the server decides on expiry by its own clock: a refresh before it is refused
    early = httpx.post(f"{deployment.ledger}/pay/{otn}/refresh", params={"t": token_of(link)})
    assert early.status_code == 409
    page.close()


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["t"][0]


def test_unknown_payment_is_a_404(deployment: Deployment) -> None:
    assert httpx.get(f"{deployment.ledger}/pay/zbffffffffffffffffffffffff01").status_code == 404


def test_out_trade_no_alone_opens_nothing(deployment: Deployment) -> None:
    otn, link = native_order(deployment, "WEB-CAP1")
    other_otn, other_link = native_order(deployment, "WEB-CAP2")
    assert link.startswith(f"{deployment.ledger}/pay/{otn}?t=")
    token = token_of(link)
    key = (deployment.root / "keys" / "cashier_key").read_bytes().strip()
    expired = capabilities.mint(key, str(ids.order_id(DIRECT.mchid, "WEB-CAP1")), int(time.time()) - 1)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for t in (None, "", forged, token_of(other_link), expired, "1.x", "9" * 20 + ".abc"):
        params = {"t": t} if t is not None else {}
        assert httpx.get(f"{deployment.ledger}/pay/{otn}", params=params).status_code == 404, t
        assert httpx.get(f"{deployment.ledger}/pay/{otn}/status", params=params).status_code == 404, t
        assert httpx.post(f"{deployment.ledger}/pay/{otn}/sync", params=params).status_code == 404, t
        assert httpx.post(f"{deployment.ledger}/pay/{otn}/refresh", params=params).status_code == 404, t
    page = httpx.get(link)
    assert page.status_code == 200 and "奶茶两杯" in page.text and page.headers["referrer-policy"] == "no-referrer"
    assert httpx.get(f"{deployment.ledger}/pay/{otn}/status", params={"t": token}).json()["status"] == "PAYING"
    assert httpx.get(other_link).status_code == 200 and other_otn in other_link
    with deployment.client() as http:  # only Native attempts have a cashier page
        jsapi = http.post(
            "/v1/orders",
            json={
                "merchant_order_no": "WEB-CAP3",
                "amount_fen": 1,
                "description": "x",
                "channel": "jsapi",
                "payer_openid": "oCap3",
            },
        )
        assert jsapi.status_code == 201 and "cashier_url" not in jsapi.json()
