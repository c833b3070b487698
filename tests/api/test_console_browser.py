"""The console in real headless Chromium: each role logs in with its key and sees what it may (issue 16).

Screenshots land in the deployment's directory (console-*.png).
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import Browser, Page

from sandbox.keyset import DIRECT, PUBLIC_KEY_ID
from tests.api.test_cashier_browser import browser
from tests.api.test_finance import cli, sandbox_day, to_next_day_ten
from tests.api.test_review_api import abnormal_refund, create, duplicate_paid
from tests.deploy import STORES, Deployment, sharing
from tests.spec_wechat import SpecWechat, paid_resource


@pytest.fixture(scope="module", params=STORES)
def deployment(request: pytest.FixtureRequest) -> Deployment:
    """This module shares the session's deployment: its orders are its own, it moves no clock."""
    return sharing(request)


__all__ = ["browser"]
pytestmark = pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)


def login(browser: Browser, deployment: Deployment, role: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{deployment.ledger}/console")
    assert "/console/login" in page.url  # not logged in: the login page
    page.fill("#key", deployment.keys[role])
    page.click("#login")
    page.wait_for_selector("#who")
    assert role in page.text_content("#who")
    return page


def test_a_merchant_resolves_a_duplicate_payment_by_refunding_it(deployment: Deployment, browser: Browser) -> None:
    duplicate, _ = duplicate_paid(deployment, "CON-DUP")
    page = login(browser, deployment, "merchant")
    page.fill("#q", "CON-DUP")
    page.click("#search")
    page.wait_for_selector("#timeline")
    assert page.text_content("#status") == "待人工处理"
    events_before = page.locator("#timeline tr").count()
    page.screenshot(path=str(deployment.root / "console-order-review.png"), full_page=True)

    def resolve_by_refund() -> None:
        page.select_option("#resolve-action", "refund")
        page.select_option("#resolve-payment", duplicate)
        page.fill("#resolve-note", "重复支付，退回第二笔")
        page.click("#resolve")
        page.wait_for_selector("#msg")

    deployment.faults(refund_balance_fen=0)  # WeChat refuses the refund: the review stays open (issue 23, point 1)
    resolve_by_refund()
    assert "未能处理" in page.text_content("#msg") and "NOT_ENOUGH" in page.text_content("#msg")
    assert page.text_content("#status") == "待人工处理"
    page.screenshot(path=str(deployment.root / "console-order-refund-refused.png"), full_page=True)
    deployment.faults(reset=True)
    resolve_by_refund()
    assert "退款已被微信受理" in page.text_content("#msg")
    assert page.text_content("#status") == "已支付"
    assert page.locator("#timeline tr").count() > events_before
    assert "ReviewResolved" in page.text_content("#timeline")
    assert f"RV{duplicate}-2" in page.text_content("#refunds")  # a new refund, not the dead one
    page.screenshot(path=str(deployment.root / "console-order-resolved.png"), full_page=True)
    # the timeline's first event opens the order as it stood then
    page.click("#timeline tr:nth-child(2) a")
    page.wait_for_selector("#as-of")
    assert page.text_content("#status") == "待支付"
    # the review queue is empty again; logout ends the session
    page.goto(f"{deployment.ledger}/console/reviews")
    assert "CON-DUP" not in page.text_content("#queue")
    page.click("#logout")
    page.wait_for_selector("#key")
    page.goto(f"{deployment.ledger}/console")
    assert "/console/login" in page.url
    page.context.close()


def test_support_sees_no_refund_button_and_is_refused_if_it_posts_anyway(
    deployment: Deployment, browser: Browser
) -> None:
    with deployment.client() as http:
        create(http, "CON-SUP")
    page = login(browser, deployment, "support")
    page.goto(f"{deployment.ledger}/console/orders/CON-SUP")
    page.wait_for_selector("#timeline")
    assert page.locator("#refund-form").count() == 0 and page.locator("#resolve-form").count() == 0
    assert page.locator("#sync").count() == 1 and page.locator("#note-form").count() == 1
    page.fill("#note-text", "顾客来电说已付款")
    page.click("#note")
    page.wait_for_selector("#notes")
    assert "顾客来电说已付款" in page.text_content("#notes")
    page.screenshot(path=str(deployment.root / "console-support.png"), full_page=True)
    csrf = page.get_attribute("input[name=csrf]", "value")
    status = page.evaluate(
        """async ([url, csrf]) => {
            const form = new URLSearchParams({csrf, amount_fen: "1", out_trade_no: ""});
            return (await fetch(url, {method: "POST", body: form})).status;
        }""",
        [f"{deployment.ledger}/console/orders/CON-SUP/refund", csrf],
    )
    assert status == 403
    page.goto(f"{deployment.ledger}/console/reconciliation")
    assert "无权访问" in page.text_content("h1")
    page.context.close()


def test_finance_acknowledges_a_difference_and_the_day_closes(deployment: Deployment, browser: Browser) -> None:
    day = sandbox_day(deployment)
    wechat = SpecWechat.from_keyset(deployment.root / "keys", DIRECT.mchid, PUBLIC_KEY_ID)
    deployment.faults(notifications="drop")
    with deployment.client() as http:
        ghost = create(http, "CON-GHOST", 800)
    on_the_day = f"{day.isoformat()}T12:00:00+08:00"
    body = wechat.body(
        "TRANSACTION.SUCCESS",
        paid_resource(DIRECT.mchid, DIRECT.appid, ghost, 800, "4200000000000000000000000777", on_the_day),
    )
    assert (
        httpx.post(deployment.ledger + "/wechatpay/v3/notify", content=body, headers=wechat.headers(body)).status_code
        == 204
    )
    deployment.faults(reset=True)
    to_next_day_ten(deployment, day)
    assert cli(deployment, "reconcile", "--date", day.isoformat(), "--merchant", DIRECT.mchid).returncode == 3
    page = login(browser, deployment, "finance")
    page.goto(f"{deployment.ledger}/console/reconciliation?date={day.isoformat()}")
    assert page.text_content("#day-state") == "未关账"
    row = page.locator("#diff-payment-4200000000000000000000000777")
    row.locator("input[name=text]").fill("测试单：账本记了，微信没有，已核实")
    row.locator("button").click()
    page.wait_for_selector("#msg")
    assert "已关账" in page.text_content("#msg") and page.text_content("#day-state") == "已关账"
    page.screenshot(path=str(deployment.root / "console-reconciliation.png"), full_page=True)
    page.goto(f"{deployment.ledger}/console/refused")
    assert "无权访问" in page.text_content("h1")  # finance cannot open audit pages
    download = page.request.get(f"{deployment.ledger}/console/exports/reconciliation.xlsx?date={day.isoformat()}")
    assert download.status == 200 and download.body()[:2] == b"PK"
    page.context.close()


def test_an_auditor_sees_refused_callbacks_and_raw_events(deployment: Deployment, browser: Browser) -> None:
    wechat = SpecWechat.from_keyset(deployment.root / "keys", DIRECT.mchid, PUBLIC_KEY_ID)
    forged = b'{"id": "forged-for-the-console"}'
    headers = wechat.headers(forged) | {"Wechatpay-Signature": "Zm9yZ2Vk"}
    notify = f"{deployment.ledger}/wechatpay/v3/notify/{DIRECT.mchid}"  # this merchant's own path: its auditor's
    assert httpx.post(notify, content=forged, headers=headers).status_code == 401
    page = login(browser, deployment, "auditor")
    page.goto(f"{deployment.ledger}/console/refused")
    assert "forged-for-the-console" in page.content()
    page.screenshot(path=str(deployment.root / "console-refused.png"), full_page=True)
    page.goto(f"{deployment.ledger}/console/orders/CON-DUP")
    assert page.locator("#timeline details").count() > 3  # every event's data, expandable
    assert page.locator("#refund-form").count() == 0 and page.locator("#note-form").count() == 0
    page.context.close()


def test_a_post_without_the_csrf_token_is_refused(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.ledger, follow_redirects=False) as http:
        assert http.post("/console/login", data={"key": deployment.keys["merchant"]}).status_code == 303
        page = http.get("/console/orders/CON-SUP").text
        assert re.search(r'name="csrf" value="[0-9a-f]{40}"', page)
        refused = http.post("/console/orders/CON-SUP/note", data={"text": "no token"})
        assert refused.status_code == 403 and "CSRF" in refused.text
        forged = http.post("/console/orders/CON-SUP/note", data={"text": "wrong token", "csrf": "0" * 40})
        assert forged.status_code == 403
        assert "no token" not in http.get("/console/orders/CON-SUP").text
        cookie = http.cookies.jar
        assert any(c.name == "zb_console" and c.has_nonstandard_attr("HttpOnly") for c in cookie)


def test_a_merchant_settles_an_abnormal_refund_offline(deployment: Deployment, browser: Browser) -> None:
    abnormal_refund(deployment, "CON-ABN")
    page = login(browser, deployment, "merchant")
    page.goto(f"{deployment.ledger}/console/orders/CON-ABN")
    form = page.locator("form.abnormal")
    form.locator("select[name=action]").select_option("settled_offline")
    form.locator("input[name=note]").fill("门店现金退还")
    form.locator("button").click()
    page.wait_for_selector("#msg")
    assert page.text_content("#msg") == "异常退款已处理" and page.text_content("#status") == "已全额退款"
    assert "线下已退" in page.text_content("#refunds") and page.locator("form.abnormal").count() == 0
    page.context.close()


def test_the_webhooks_page_shows_recent_deliveries(deployment: Deployment) -> None:
    with deployment.client() as merchant:
        made = merchant.post("/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/nobody-listens"})
        assert made.status_code == 201, made.text
        deployment.pay(create(merchant, "CON-HOOK"))
        deployment.wait_status("CON-HOOK", "PAID")
    with httpx.Client(base_url=deployment.ledger, follow_redirects=False) as http:
        assert http.post("/console/login", data={"key": deployment.keys["merchant"]}).status_code == 303
        deadline = time.monotonic() + 20
        while "nobody-listens" not in (page := http.get("/console/webhooks").text) or "evt_" not in page:
            assert time.monotonic() < deadline, page[-2000:]
            time.sleep(0.3)
        assert re.search(r"<td>evt_\d{16}</td>", page) and "refused" in page.lower()
