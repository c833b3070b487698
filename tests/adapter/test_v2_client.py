"""The v2 client against the sandbox (retries, mutual TLS) and against a fake that forges answers."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from adapters.wechatpay import v2_signing
from adapters.wechatpay.client import PrepayRequest, RefundRequest
from adapters.wechatpay.config import Merchant, load_merchants
from adapters.wechatpay.errors import (
    MerchantConfigError,
    SignatureError,
    WechatPayBusinessError,
    WechatPayNotFound,
    WechatPayUnavailable,
)
from adapters.wechatpay.v2_client import WechatPayV2Client
from sandbox.keyset import V2, new_certificate
from tests.fixtures_sandbox import RunningSandbox


def _merchants(keyset: Path) -> dict[str, Merchant]:
    tables = tomllib.loads((keyset / "zhangben.toml").read_text())["merchants"]
    return load_merchants(tables, keyset / "zhangben.toml", api="v2")


@pytest.fixture
def v2(sandbox: RunningSandbox, keyset: Path) -> Iterator[tuple[WechatPayV2Client, list[float]]]:
    sleeps: list[float] = []
    client = WechatPayV2Client(
        sandbox.url,
        _merchants(keyset),
        secapi_base_url=sandbox.tls_url,
        ca_file=str(keyset / "keys" / "wechatpay" / "tls_ca.pem"),
        sleep=sleeps.append,
    )
    yield client, sleeps
    client.close_http()


def _expiry() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=30)


def test_systemerror_is_retried_with_the_same_out_trade_no(
    sandbox: RunningSandbox, v2: tuple[WechatPayV2Client, list[float]]
) -> None:
    client, sleeps = v2
    merchant = client.merchant(V2.mchid)
    sandbox.control.post(
        "/sandbox/faults",
        json={"endpoints": {"/pay/unifiedorder": {"error_rate": 1, "error_code": "SYSTEMERROR", "count": 2}}},
    )
    result = client.prepay(merchant, PrepayRequest("native", "V2RETRY0001", "tea", 100, _expiry()))
    assert result.code_url and len(sleeps) == 2 and client.stats.by_code["SYSTEMERROR"] == 2
    assert client.transaction(merchant, "V2RETRY0001").trade_state == "NOTPAY"  # one order at WeChat


def test_bizerr_need_retry_on_a_refund_then_unavailable_after_the_last_attempt(
    sandbox: RunningSandbox, v2: tuple[WechatPayV2Client, list[float]]
) -> None:
    client, sleeps = v2
    merchant = client.merchant(V2.mchid)
    client.prepay(merchant, PrepayRequest("native", "V2RETRY0002", "tea", 100, _expiry()))
    sandbox.control.post("/sandbox/pay", json={"out_trade_no": "V2RETRY0002"})
    sandbox.control.post(
        "/sandbox/faults",
        json={"endpoints": {"/secapi/pay/refund": {"error_rate": 1, "error_code": "BIZERR_NEED_RETRY", "count": 1}}},
    )
    notice = client.request_refund(merchant, RefundRequest("V2RETRY0002", "V2RETRY0002-R", 40, 100))
    assert notice.status == "PROCESSING" and notice.refund_fen == 40 and len(sleeps) == 1
    sandbox.control.post("/sandbox/faults", json={"endpoints": {"/pay/orderquery": {"error_rate": 1}}})
    with pytest.raises(WechatPayUnavailable):
        client.transaction(merchant, "V2RETRY0002")
    assert len(sleeps) == 1 + 3  # four attempts in all
    sandbox.control.post("/sandbox/faults", json={"reset": True})
    with pytest.raises(WechatPayNotFound):
        client.refund_status(merchant, "NEVER-REFUNDED")
    with pytest.raises(WechatPayBusinessError) as closed:
        client.close(merchant, "V2RETRY0002")
    assert closed.value.is_code("ORDERPAID")


def test_a_refund_without_the_client_certificate(sandbox: RunningSandbox, keyset: Path) -> None:
    merchants = _merchants(keyset)
    bare = {k: Merchant(**{**vars(m), "client_cert_file": None, "client_key_file": None}) for k, m in merchants.items()}
    client = WechatPayV2Client(sandbox.url, bare, secapi_base_url=sandbox.tls_url)
    with pytest.raises(MerchantConfigError, match="client_cert_file"):
        client.request_refund(bare[V2.mchid], RefundRequest("X", "R", 1, 1))
    # another merchant's certificate is not this one's, but the handshake itself needs a known one:
    # a client certificate nobody configured is refused before any HTTP is spoken
    stranger = keyset / "stranger"
    stranger.mkdir(exist_ok=True)
    key_pem, cert_pem, _ = new_certificate("stranger")
    (stranger / "key.pem").write_bytes(key_pem)
    (stranger / "cert.pem").write_bytes(cert_pem)
    foreign = {
        k: Merchant(**{**vars(m), "client_cert_file": stranger / "cert.pem", "client_key_file": stranger / "key.pem"})
        for k, m in merchants.items()
    }
    client = WechatPayV2Client(
        sandbox.url,
        foreign,
        secapi_base_url=sandbox.tls_url,
        ca_file=str(keyset / "keys" / "wechatpay" / "tls_ca.pem"),
        sleep=lambda _: None,
    )
    with pytest.raises(WechatPayUnavailable):
        client.request_refund(foreign[V2.mchid], RefundRequest("X", "R", 1, 1))


def test_an_answer_whose_sign_does_not_check_is_not_believed(keyset: Path) -> None:
    merchant = _merchants(keyset)[V2.mchid]
    seen: list[bytes] = []

    def forged(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        asked = v2_signing.parse_xml(request.content)
        assert asked["sign"] == v2_signing.sign(asked, merchant.v2_key, merchant.v2_sign_type)
        answer = {"return_code": "SUCCESS", "result_code": "SUCCESS", "out_trade_no": "X", "trade_state": "SUCCESS"}
        return httpx.Response(200, content=v2_signing.to_xml(v2_signing.signed(answer, "f" * 32)))

    client = WechatPayV2Client(
        "https://api.mch.weixin.qq.com", {V2.mchid: merchant}, http=httpx.Client(transport=httpx.MockTransport(forged))
    )
    with pytest.raises(SignatureError):
        client.transaction(merchant, "X")
    assert len(seen) == 1  # not retried
    with pytest.raises(SignatureError):
        client.transaction(merchant, "X")
    nonces = {v2_signing.parse_xml(body)["nonce_str"] for body in seen}
    assert len(nonces) == 2  # every request a fresh nonce
