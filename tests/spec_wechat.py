"""WeChat Pay's side of a callback, written from the protocol alone (docs/wechatpay-protocol.md §2–§3).

Signs with ``cryptography`` and encrypts with AES-GCM directly; shares no
code with the sandbox or the adapter.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class SpecWechat:
    def __init__(self, signing_key_pem: bytes, serial: str, apiv3_key: bytes) -> None:
        self.key = serialization.load_pem_private_key(signing_key_pem, password=None)
        self.serial = serial
        self.apiv3_key = apiv3_key

    @classmethod
    def from_keyset(cls, keys: Path, mchid: str, public_key_id: str) -> SpecWechat:
        return cls(
            (keys / "wechatpay" / "pub_key_private.pem").read_bytes(),
            public_key_id,
            (keys / mchid / "apiv3_key").read_bytes().strip(),
        )

    def encrypt(self, resource: dict[str, Any], associated_data: str, key: bytes | None = None) -> dict[str, str]:
        nonce = secrets.token_hex(6)
        ciphertext = AESGCM(key or self.apiv3_key).encrypt(
            nonce.encode(), json.dumps(resource, ensure_ascii=False).encode(), associated_data.encode()
        )
        return {
            "original_type": associated_data,
            "algorithm": "AEAD_AES_256_GCM",
            "nonce": nonce,
            "associated_data": associated_data,
            "ciphertext": base64.b64encode(ciphertext).decode(),
        }

    def body(
        self,
        event_type: str,
        resource: dict[str, Any],
        associated_data: str = "transaction",
        notification_id: str | None = None,
    ) -> bytes:
        envelope = {
            "id": notification_id or str(uuid.uuid4()),
            "create_time": "2026-11-22T10:00:00+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": self.encrypt(resource, associated_data),
        }
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()

    def headers(self, body: bytes, timestamp: int | None = None, key: Any = None) -> dict[str, str]:
        ts = str(timestamp if timestamp is not None else int(time.time()))
        nonce = secrets.token_hex(16)
        message = f"{ts}\n{nonce}\n".encode() + body + b"\n"
        signature = (key or self.key).sign(message, padding.PKCS1v15(), hashes.SHA256())
        return {
            "Content-Type": "application/json",
            "Wechatpay-Timestamp": ts,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Serial": self.serial,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            "Wechatpay-Signature": base64.b64encode(signature).decode(),
        }


def paid_resource(
    mchid: str,
    appid: str,
    out_trade_no: str,
    total: int,
    transaction_id: str,
    success_time: str = "2026-11-22T10:00:00+08:00",
) -> dict[str, Any]:
    """docs/wechatpay-protocol.md §3.3, direct mode."""
    return {
        "mchid": mchid,
        "appid": appid,
        "out_trade_no": out_trade_no,
        "transaction_id": transaction_id,
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "attach": "",
        "success_time": success_time,
        "payer": {"openid": "oSpecPayer"},
        "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
    }
