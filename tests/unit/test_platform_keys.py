"""Platform certificates: a signature under an expired one verifies nothing (adapters/wechatpay/platform.py)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.persistence import parse_url
from adapters.throttles import SharedThrottle
from adapters.viewdb import ViewDatabase
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


def test_a_flood_of_unknown_serials_downloads_once_a_minute_across_workers(tmp_path: Path) -> None:
    """Issue 23, point 9: two workers (two caches, one database), eight threads each, forged serials: one download."""
    db = ViewDatabase(parse_url(f"sqlite:///{tmp_path}/views.db"))
    throttle = SharedThrottle(db)
    throttle.create_tables()
    downloads: list[float] = []

    def downloader() -> list[PlatformCertificate]:
        downloads.append(time.monotonic())
        time.sleep(0.05)  # WeChat takes a moment: the others arrive meanwhile
        return []

    workers = [
        PlatformKeys({}, downloader=downloader, claim=lambda: throttle.claim("platform-certificates:M1", 60))
        for _ in range(2)
    ]
    refused: list[str] = []

    def flood(keys: PlatformKeys, n: int) -> None:
        for i in range(20):
            try:
                keys.key_for(f"FORGED{n:02d}{i:04d}")
            except SignatureError as exc:
                refused.append(str(exc))

    threads = [threading.Thread(target=flood, args=(w, n)) for n in range(8) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(downloads) == 1 and len(refused) == 320
    assert not throttle.claim("platform-certificates:M1", 60)  # still within the minute
    assert throttle.claim("platform-certificates:M2", 60)  # another merchant is its own
    later = SharedThrottle(db, wall_clock=lambda: time.time() + 61)
    assert later.claim("platform-certificates:M1", 60)  # a minute on
    db.close()
