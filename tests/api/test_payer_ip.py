"""The payer's IP for H5: the body's, else a trusted proxy's headers, else the peer; never a forged header."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from api.client_ip import payer_ip
from tests.deploy import Deployment, deploy

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))


def request(peer: str, **headers: str) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/orders",
        "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()],
        "client": (peer, 40000),
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("peer", "headers", "body", "expected"),
    [
        ("203.0.113.9", {"x_forwarded_for": "1.1.1.1", "x_real_ip": "2.2.2.2"}, None, "203.0.113.9"),  # untrusted
        ("10.0.0.2", {"x_forwarded_for": "198.51.100.7"}, None, "198.51.100.7"),
        ("10.0.0.2", {"x_forwarded_for": "6.6.6.6, 198.51.100.7, 10.0.0.9"}, None, "198.51.100.7"),  # forged left
        ("10.0.0.2", {"x_real_ip": "2001:db8::5"}, None, "2001:db8::5"),
        ("10.0.0.2", {"x_forwarded_for": "10.0.0.7"}, None, "10.0.0.7"),  # only proxies: the leftmost
        ("10.0.0.2", {"x_forwarded_for": "not-an-ip"}, None, "10.0.0.2"),
        ("10.0.0.2", {}, None, "10.0.0.2"),
        ("10.0.0.2", {"x_forwarded_for": "198.51.100.7"}, "192.0.2.1", "192.0.2.1"),  # the body wins
    ],
)
def test_payer_ip(peer: str, headers: dict[str, str], body: str | None, expected: str) -> None:
    assert payer_ip(request(peer, **headers), body, PROXIES) == expected


@pytest.fixture(scope="module")
def behind_a_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root: Path = tmp_path_factory.mktemp("proxy")
    os.environ["ZHANGBEN_TRUSTED_PROXIES"] = "127.0.0.1, 10.0.0.0/8"  # the front (nginx) on this host
    extra = '\n[callbacks]\nallowed_networks = ["101.226.0.0/16", "2001:db8:77::/48"]\n'  # "WeChat's" addresses
    try:
        with deploy(root, f"sqlite:///{root}/ledger.db", config_extra=extra) as deployment:
            yield deployment
    finally:
        del os.environ["ZHANGBEN_TRUSTED_PROXIES"]


def test_h5_behind_a_trusted_proxy_sends_the_payers_address(behind_a_proxy: Deployment) -> None:
    body = {"merchant_order_no": "IP-1", "amount_fen": 100, "description": "茶", "channel": "h5"}
    with behind_a_proxy.client() as http:
        answer = http.post("/v1/orders", json=body, headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.7"})
        assert answer.status_code == 201, answer.text
        otn = answer.json()["payment"]["out_trade_no"]
    seen = httpx.get(f"{behind_a_proxy.sandbox}/sandbox/orders/{otn}").json()
    assert seen["trade_type"] == "MWEB" and seen["payer_client_ip"] == "198.51.100.7"


def test_notifications_from_outside_the_allowed_networks_are_refused_and_kept(behind_a_proxy: Deployment) -> None:
    """``[callbacks] allowed_networks`` (seed 000 §7): the source a trusted proxy forwarded for must be in it; a
    refusal is kept like any other.  Inside it, the signature is still what decides."""
    body = b'{"id": "n1", "event_type": "TRANSACTION.SUCCESS", "resource": {}}'
    outside = httpx.post(
        f"{behind_a_proxy.ledger}/wechatpay/v3/notify", content=body, headers={"X-Forwarded-For": "203.0.113.5"}
    )
    assert outside.status_code == 403 and outside.json()["code"] == "FAIL"
    v2 = httpx.post(
        f"{behind_a_proxy.ledger}/wechatpay/v2/notify", content=b"<xml/>", headers={"X-Forwarded-For": "203.0.113.6"}
    )
    assert v2.status_code == 403 and "<return_code><![CDATA[FAIL]]>" in v2.text
    inside = httpx.post(
        f"{behind_a_proxy.ledger}/wechatpay/v3/notify", content=body, headers={"X-Forwarded-For": "101.226.3.4"}
    )
    assert inside.status_code == 401  # past the network check: the signature is refused
    with behind_a_proxy.client("operator") as http:
        refused = http.get("/v1/audit/refused-callbacks", params={"reason": "allowed_networks"}).json()["refused"]
    assert {r["remote"] for r in refused} == {"203.0.113.5", "203.0.113.6"}
