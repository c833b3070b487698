"""Error mapping and retries, on a fake transport that behaves like WeChat and counts attempts."""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from adapters.wechatpay import signing
from adapters.wechatpay.client import RefundRequest, WechatPayClient
from adapters.wechatpay.config import Merchant, load_merchants
from adapters.wechatpay.errors import (
    SignatureError,
    WechatPayBusinessError,
    WechatPayNotFound,
    WechatPayRateLimited,
    WechatPayUnavailable,
)
from sandbox.keyset import DIRECT, init_keyset


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Merchant], Path]:
    root = tmp_path_factory.mktemp("retry")
    init_keyset(root / "keys", root / "zhangben.toml", "http://l", "http://s")
    tables = tomllib.loads((root / "zhangben.toml").read_text())["merchants"]
    return load_merchants(tables, root / "zhangben.toml"), root


class FakeWechat:
    """Answers from a script, records every request it saw, signs 2xx answers like WeChat."""

    def __init__(self, keys_root: Path, script: list[tuple[int, dict | None]]) -> None:
        self.script = script
        self.requests: list[httpx.Request] = []
        self.key = signing.load_private_key((keys_root / "keys" / "wechatpay" / "pub_key_private.pem").read_bytes())
        self.serial = "PUB_KEY_ID_0119000000012026112200000001"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, payload = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if status == 0:
            raise httpx.ConnectTimeout("timed out", request=request)
        body = json.dumps(payload).encode() if payload is not None else b""
        headers = {}
        if 200 <= status < 300:
            ts, nonce = str(int(time.time())), signing.new_nonce()
            headers = {
                "Wechatpay-Timestamp": ts,
                "Wechatpay-Nonce": nonce,
                "Wechatpay-Serial": self.serial,
                "Wechatpay-Signature-Type": signing.SCHEMA,
                "Wechatpay-Signature": signing.sign(self.key, signing.response_message(ts, nonce, body)),
            }
        return httpx.Response(status, content=body, headers=headers)


def client_for(
    keys: tuple[dict[str, Merchant], Path], script: list[tuple[int, dict | None]]
) -> tuple[WechatPayClient, FakeWechat, list[float]]:
    fake = FakeWechat(keys[1], script)
    sleeps: list[float] = []
    client = WechatPayClient(
        "https://api.mch.weixin.qq.com",
        keys[0],
        http=httpx.Client(transport=httpx.MockTransport(fake)),
        max_attempts=4,
        sleep=sleeps.append,
    )
    return client, fake, sleeps


def query(client: WechatPayClient) -> Callable[[], object]:
    return lambda: client.query(client.merchant(DIRECT.mchid), "ZB0000000001")


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (500, "SYSTEM_ERROR", WechatPayUnavailable),
        (500, "SYSTEMERROR", WechatPayUnavailable),
        (502, "BANK_ERROR", WechatPayUnavailable),
        (429, "FREQUENCY_LIMITED", WechatPayRateLimited),
    ],
)
def test_retryable_errors_are_retried_with_the_same_body_then_surface(
    keys, status: int, code: str, error: type
) -> None:
    client, fake, sleeps = client_for(keys, [(status, {"code": code, "message": "busy"})])
    merchant = client.merchant(DIRECT.mchid)
    with pytest.raises(error) as info:
        client.refund(merchant, RefundRequest("ZB0000000001", "R1", 100, 1000))
    assert info.value.code == code
    assert len(fake.requests) == 4
    assert len({r.content for r in fake.requests}) == 1  # the same out_refund_no, the same body
    assert len({r.headers["Authorization"] for r in fake.requests}) == 4  # signed afresh each time
    assert len(sleeps) == 3 and sleeps[0] < sleeps[1] < sleeps[2]  # backoff


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "PARAM_ERROR", WechatPayBusinessError),
        (400, "ORDER_CLOSED", WechatPayBusinessError),
        (403, "ORDERPAID", WechatPayBusinessError),
        (403, "OUT_TRADE_NO_USED", WechatPayBusinessError),
        (403, "NOT_ENOUGH", WechatPayBusinessError),
        (404, "ORDER_NOT_EXIST", WechatPayNotFound),
        (404, "RESOURCE_NOT_EXISTS", WechatPayNotFound),
        (401, "SIGN_ERROR", SignatureError),
        (500, "OPENID_MISMATCH", WechatPayUnavailable),
        (500, "INVALID_TRANSACTIONID", WechatPayUnavailable),
    ],
)
def test_refusals_are_not_retried(keys, status: int, code: str, error: type) -> None:
    client, fake, sleeps = client_for(keys, [(status, {"code": code, "message": "no"})])
    with pytest.raises(error) as info:
        query(client)()
    assert info.value.code == code and info.value.status == status
    assert len(fake.requests) == 1 and sleeps == []


def test_a_timeout_then_success_is_retried_once(keys) -> None:
    client, fake, _ = client_for(keys, [(0, None), (200, {"out_trade_no": "ZB0000000001", "trade_state": "NOTPAY"})])
    assert query(client)()["trade_state"] == "NOTPAY"
    assert len(fake.requests) == 2


def test_an_answer_with_a_bad_signature_is_not_believed(keys) -> None:
    client, fake, _ = client_for(keys, [(200, {"trade_state": "SUCCESS"})])
    fake.key = signing.load_private_key((keys[1] / "keys" / DIRECT.mchid / "apiclient_key.pem").read_bytes())
    with pytest.raises(SignatureError):
        query(client)()
    assert client.stats.by_code == {"SignatureError": 1}


def test_requests_are_signed_as_the_spec_says(keys) -> None:
    client, fake, _ = client_for(keys, [(204, None)])
    merchant = client.merchant(DIRECT.mchid)
    client.close(merchant, "ZB0000000001")
    request = fake.requests[0]
    auth = signing.parse_authorization(request.headers["Authorization"])
    assert auth.mchid == DIRECT.mchid and auth.serial_no == merchant.cert_serial_no
    message = signing.request_message(
        "POST", "/v3/pay/transactions/out-trade-no/ZB0000000001/close", auth.timestamp, auth.nonce_str, request.content
    )
    assert signing.verify(merchant.private_key.public_key(), message, auth.signature)
    assert request.headers["Wechatpay-Serial"] == merchant.public_key_id
    assert json.loads(request.content) == {"mchid": DIRECT.mchid}
