"""Platform certificates: a signature under an expired one verifies nothing (adapters/wechatpay/platform.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.wechatpay import signing
from adapters.wechatpay.errors import SignatureError
from adapters.wechatpay.platform import PlatformCertificate, PlatformKeys


def signed(key: rsa.RSAPrivateKey, serial: str, body: bytes) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), signing.new_nonce()
    return {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature": signing.sign(key, signing.response_message(timestamp, nonce, body)),
    }


def test_an_expired_platform_certificate_verifies_nothing_and_a_current_one_does() -> None:
    old_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    listing = [
        PlatformCertificate("OLD0001", old_key.public_key(), now - timedelta(minutes=1)),
        PlatformCertificate("NEW0002", new_key.public_key(), now + timedelta(days=365)),
    ]
    keys = PlatformKeys({}, downloader=lambda: listing)
    keys.refresh()
    body = b'{"id": "x"}'
    keys.verify(signed(new_key, "NEW0002", body), body)  # the renewed certificate, during the overlap
    with pytest.raises(SignatureError, match="expired"):
        keys.verify(signed(old_key, "OLD0001", body), body)
