"""WeChat Pay's v3 notifications as the sandbox makes them: the resource sealed with the merchant's APIv3 key
(AEAD_AES_256_GCM, https://pay.weixin.qq.com/doc/v3/merchant/4012071382), the body signed with WeChat's key
(https://pay.weixin.qq.com/doc/v3/merchant/4013053249).

The notifier sends these; ``make bench`` makes its callback storms with ``WechatSender`` from the same
functions, so what it measures is what the sandbox (and WeChat) send.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.wechatpay import signing
from sandbox.keyset import PUBLIC_KEY_ID
from sandbox.transactions import transaction_json

SUMMARIES = {
    "TRANSACTION.SUCCESS": "支付成功",
    "REFUND.SUCCESS": "退款成功",
    "REFUND.ABNORMAL": "退款异常",
    "REFUND.CLOSED": "退款关闭",
}


def sealed_body(
    apiv3_key: bytes, event_type: str, original_type: str, resource: Mapping[str, Any], create_time: str
) -> tuple[str, str]:
    """A notification's id and body: the resource encrypted once (the body is the same on every retry)."""
    nonce = secrets.token_urlsafe(9)[:12]
    plaintext = json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()
    ciphertext = signing.aead_encrypt(apiv3_key, nonce, original_type, plaintext)
    notification_id = str(uuid.uuid4())
    envelope = {
        "id": notification_id,
        "create_time": create_time,
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": SUMMARIES[event_type],
        "resource": {
            "original_type": original_type,
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "associated_data": original_type,
            "nonce": nonce,
        },
    }
    return notification_id, json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))


def signed_headers(key: rsa.RSAPrivateKey, serial: str, body: bytes, probe: bool = False) -> dict[str, str]:
    """The five ``Wechatpay-*`` headers over ``body`` (``probe``: WeChat's SIGNTEST signature, which never verifies)."""
    timestamp, nonce = str(int(time.time())), signing.new_nonce()
    signature = signing.sign(key, signing.response_message(timestamp, nonce, body))
    if probe:
        signature = signing.SIGNTEST_PREFIX + secrets.token_urlsafe(24)
    return {
        "Content-Type": "application/json",
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": signing.SCHEMA,
        "Request-ID": str(uuid.uuid4()),
        "User-Agent": "Mozilla/4.0 (zhangben sandbox notifier)",
    }


@dataclass(frozen=True)
class WechatSender:
    """WeChat's side of one merchant's notifications, from a keyset written by ``zhangben keys init``: what
    ``make bench`` posts to the ledger the way WeChat would (public-key mode)."""

    apiv3_key: bytes
    key: rsa.RSAPrivateKey
    serial: str = PUBLIC_KEY_ID

    @classmethod
    def from_keyset(cls, keys: Path, mchid: str) -> WechatSender:
        key = serialization.load_pem_private_key((keys / "wechatpay" / "pub_key_private.pem").read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return cls((keys / mchid / "apiv3_key").read_bytes().strip(), key)

    def body(self, event_type: str, resource: Mapping[str, Any], original_type: str = "transaction") -> bytes:
        return sealed_body(self.apiv3_key, event_type, original_type, resource, "2026-11-22T10:00:00+08:00")[1].encode()

    def headers(self, body: bytes) -> dict[str, str]:
        return signed_headers(self.key, self.serial, body)


def paid_transaction(
    mchid: str, appid: str, out_trade_no: str, total: int, transaction_id: str, sub_mchid: str = ""
) -> dict[str, Any]:
    """A Native transaction paid in full, as a notification or a query carries it: a direct merchant's, or a
    sub-merchant's (``sub_mchid``) under its service provider's ``mchid`` and ``appid``."""
    return transaction_json(
        {
            "partner": bool(sub_mchid),
            "sub_mchid": sub_mchid,
            "sub_appid": "",
            "appid": appid,
            "mchid": mchid,
            "out_trade_no": out_trade_no,
            "trade_type": "NATIVE",
            "state": "SUCCESS",
            "attach": "",
            "transaction_id": transaction_id,
            "success_time": "2026-11-22T10:00:00+08:00",
            "openid_field": "openid",
            "openid": "oBenchPayer",
            "total": total,
            "payer_total": total,
        }
    )
