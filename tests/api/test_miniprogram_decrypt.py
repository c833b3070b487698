"""The session key's use: a mini-program's ``encryptedData`` opened server-side (issue 28, seed 002).

The vectors are made by an independent encryptor, the ``openssl enc`` command (AES-128-CBC, PKCS#7), from the
payer's session key that the sandbox's ``wx.login`` hands the ledger — never by the ledger's own code.  And the
pay parameters a mini-program passes to ``wx.requestPayment`` carry ``timeStamp`` in seconds, not the
milliseconds of seed 002's sample (a known pitfall: WeChat refuses the payment).
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
from typing import Any

import httpx
import pytest

from sandbox.keyset import DIRECT
from tests.deploy import STORES, Deployment, sharing


@pytest.fixture(scope="module", params=STORES)
def deployment(request: pytest.FixtureRequest) -> Deployment:
    return sharing(request)


def openssl_encrypt(session_key: str, iv: bytes, plain: bytes) -> str:
    """``encryptedData`` as WeChat makes it, by the openssl command: AES-128-CBC with PKCS#7 padding, base64."""
    done = subprocess.run(
        ["openssl", "enc", "-aes-128-cbc", "-K", base64.b64decode(session_key).hex(), "-iv", iv.hex(), "-base64", "-A"],
        input=plain,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


def logged_in(deployment: Deployment, openid: str) -> str:
    """The payer logs in (``wx.login`` played by the sandbox with a session key the test chose); the key."""
    session_key = base64.b64encode(secrets.token_bytes(16)).decode()
    code = httpx.post(
        f"{deployment.sandbox}/sandbox/wx-login",
        json={"appid": DIRECT.appid, "openid": openid, "session_key": session_key},
    ).json()["code"]
    with deployment.client() as http:
        assert http.post("/v1/wechat/miniprogram/login", json={"code": code}).status_code == 200
    return session_key


def phone_data(appid: str) -> dict[str, Any]:
    return {
        "phoneNumber": "13800138000",
        "purePhoneNumber": "13800138000",
        "countryCode": "86",
        "watermark": {"timestamp": int(time.time()), "appid": appid},
    }


def test_encrypted_data_opens_with_the_payers_session_key(deployment: Deployment) -> None:
    openid = f"oDecrypt{secrets.token_hex(4)}"
    session_key = logged_in(deployment, openid)
    iv = secrets.token_bytes(16)
    data = phone_data(DIRECT.appid)
    sealed = openssl_encrypt(session_key, iv, json.dumps(data, ensure_ascii=False).encode())
    body = {"openid": openid, "encrypted_data": sealed, "iv": base64.b64encode(iv).decode()}
    with deployment.client() as http:
        opened = http.post("/v1/wechat/miniprogram/decrypt", json=body)
        assert opened.status_code == 200, opened.text
        assert opened.json() == data
        # data sealed for another mini-program (its watermark) is refused, as is data the key does not open
        other = openssl_encrypt(session_key, iv, json.dumps(phone_data("wx9999999999999999")).encode())
        refused = http.post("/v1/wechat/miniprogram/decrypt", json=body | {"encrypted_data": other})
        assert refused.status_code == 422 and "watermark" in refused.json()["detail"]
        stale = openssl_encrypt(base64.b64encode(bytes(16)).decode(), iv, json.dumps(data).encode())
        wrong = http.post("/v1/wechat/miniprogram/decrypt", json=body | {"encrypted_data": stale})
        assert wrong.status_code == 422 and "log in again" in wrong.json()["detail"]
        assert http.post("/v1/wechat/miniprogram/decrypt", json=body | {"openid": "oNeverLoggedIn"}).status_code == 409
        assert http.post("/v1/wechat/miniprogram/decrypt", json=body | {"iv": "!!"}).status_code == 422


@pytest.mark.parametrize("key", ["merchant", "v2"])
def test_pay_params_time_stamp_is_in_seconds(deployment: Deployment, key: str) -> None:
    with deployment.client(key) as http:
        created = http.post(
            "/v1/orders",
            json={
                "merchant_order_no": f"TS-{key}-{secrets.token_hex(4)}",
                "amount_fen": 100,
                "description": "茶",
                "channel": "miniprogram",
                "payer_openid": "oTimeStamp1",
            },
        )
    assert created.status_code == 201, created.text
    stamp = created.json()["payment"]["pay_params"]["timeStamp"]
    assert isinstance(stamp, str) and stamp.isdigit() and len(stamp) == 10  # seconds; milliseconds have 13 digits
    assert abs(int(stamp) - time.time()) < 300
