"""``/docs`` and ``/redoc`` on a machine with no internet: every asset from the ledger itself.

Headless Chromium with every request that leaves the ledger's own address
aborted (as on an isolated machine, or one behind the Great Firewall where the
CDNs and Google Fonts do not load): the pages must still render the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route

from tests.api.test_cashier_browser import browser
from tests.deploy import STORES, Deployment, sharing


@pytest.fixture(scope="module", params=STORES)
def deployment(request: pytest.FixtureRequest) -> Deployment:
    """This module shares the session's deployment: its orders are its own, it moves no clock."""
    return sharing(request)


__all__ = ["browser"]


@pytest.fixture
def offline_page(deployment: Deployment, browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    own = urlsplit(deployment.ledger).netloc
    blocked: list[str] = []

    def only_own(route: Route) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", only_own)
    page = context.new_page()
    yield page, blocked
    context.close()


@pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)
def test_swagger_ui_renders_with_the_network_blocked(
    deployment: Deployment, offline_page: tuple[Page, list[str]]
) -> None:
    page, blocked = offline_page
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.goto(f"{deployment.ledger}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=15000)
    assert "zhangben" in page.text_content(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-tag-section", timeout=15000)  # the operations, from /openapi.json
    assert page.locator(".opblock").count() > 10
    page.screenshot(path=str(deployment.root / "docs-offline.png"), full_page=False)
    assert blocked == [] and failed == [], (blocked, failed)


@pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)
def test_redoc_renders_with_the_network_blocked(deployment: Deployment, offline_page: tuple[Page, list[str]]) -> None:
    page, blocked = offline_page
    page.goto(f"{deployment.ledger}/redoc")
    page.wait_for_selector("h1", timeout=15000)  # ReDoc's rendering of the API's title
    page.wait_for_function("document.body.innerText.includes('orders')", timeout=15000)
    page.screenshot(path=str(deployment.root / "redoc-offline.png"), full_page=False)
    # ReDoc's own "API docs by Redocly" badge points at its CDN: an image, nothing the page needs
    assert [url for url in blocked if not url.startswith("https://cdn.redoc.ly/redoc/logo")] == [], blocked
