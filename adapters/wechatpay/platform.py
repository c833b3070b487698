"""WeChat Pay's keys, chosen by ``Wechatpay-Serial`` (docs/wechatpay-protocol.md §2.3).

A ``PUB_KEY_ID_…`` serial names the WeChat Pay public key from the config;
any other serial names a platform certificate, downloaded from
``/v3/certificates`` and decrypted with the APIv3 key.  Several certificates
live side by side during a rotation, so they are kept per serial, and an
unknown serial triggers one refresh before it is refused — at most one a
minute per merchant, across every worker (a shared ``Claim``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.wechatpay import signing
from adapters.wechatpay.errors import SignatureError, WechatPayError

# At most one certificate download per this many seconds on unknown serials:
# a flood of forged serials must not become a flood of calls to WeChat.
REFRESH_COOLDOWN_SECONDS = 60.0


@dataclass(frozen=True)
class PlatformCertificate:
    serial_no: str
    public_key: rsa.RSAPublicKey
    expire_time: datetime


Downloader = Callable[[], list[PlatformCertificate]]
# Whether this process may download now: a claim shared with the other workers (``adapters.throttles``)
Claim = Callable[[], bool]


class PlatformKeys:
    def __init__(
        self,
        public_keys: Mapping[str, rsa.RSAPublicKey],
        downloader: Downloader | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        claim: Claim | None = None,
    ) -> None:
        self._keys: dict[str, rsa.RSAPublicKey] = dict(public_keys)
        self._certificates: dict[str, PlatformCertificate] = {}
        self._downloader = downloader
        self._monotonic = monotonic
        self._last_refresh = -REFRESH_COOLDOWN_SECONDS
        self._claim = claim
        self._lock = threading.Lock()

    @property
    def certificates(self) -> list[PlatformCertificate]:
        return list(self._certificates.values())

    def refresh(self) -> list[PlatformCertificate]:
        """Download the platform certificates now (certificate mode); keep older ones too."""
        if self._downloader is None:
            return []
        with self._lock:
            return self._download()

    def _download(self) -> list[PlatformCertificate]:
        assert self._downloader is not None  # noqa: S101 — callers checked
        self._last_refresh = self._monotonic()
        certificates = self._downloader()
        for cert in certificates:
            self._certificates[cert.serial_no] = cert
            self._keys[cert.serial_no] = cert.public_key
        return certificates

    def _refresh_for_unknown(self, serial: str) -> None:
        """One download for an unknown serial, unless one was made (here, or by any worker) within the cool-down.

        Checked and made under the lock, so concurrent callbacks in this process
        make one download; the shared claim stops the other processes.
        """
        with self._lock:
            if serial in self._keys or self._monotonic() - self._last_refresh < REFRESH_COOLDOWN_SECONDS:
                return
            self._last_refresh = self._monotonic()  # a refused claim cools down too: ask again a minute later
            if self._claim is not None and not self._claim():
                return
            self._download()

    def knows(self, serial: str) -> bool:
        """Whether ``serial``'s key is here already: a signature under it is checked without a download."""
        return serial in self._keys

    def key_for(self, serial: str, now: float | None = None) -> rsa.RSAPublicKey:
        """The key ``serial`` names; a platform certificate past its ``expire_time`` verifies nothing.

        WeChat issues the next certificate before one expires and signs with it
        (https://pay.weixin.qq.com/doc/v3/merchant/4012068829): a signature under
        an expired certificate is not WeChat's current word.
        """
        known = self._certificates.get(serial)
        if known is not None and known.expire_time.timestamp() <= (now if now is not None else time.time()):
            raise SignatureError(
                f"Wechatpay-Serial {serial!r} names a platform certificate that expired at "
                f"{known.expire_time.isoformat()}"
            )
        key = self._keys.get(serial)
        if key is None and self._downloader is not None and not serial.startswith("PUB_KEY_ID_"):
            try:
                self._refresh_for_unknown(serial)
            except WechatPayError as exc:  # e.g. 404 in public-key mode: the serial stays unknown
                raise SignatureError(f"unknown Wechatpay-Serial {serial!r} ({exc})") from None
            key = self._keys.get(serial)
        if key is None:
            raise SignatureError(f"unknown Wechatpay-Serial {serial!r}")
        return key

    def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
        """Check a signed response or callback over its raw bytes, or raise ``SignatureError``."""
        lower = {k.lower(): v for k, v in headers.items()}
        if lower.get("wechatpay-signature-type", signing.SCHEMA) != signing.SCHEMA:
            raise SignatureError("unsupported Wechatpay-Signature-Type")
        timestamp, nonce = lower.get("wechatpay-timestamp", ""), lower.get("wechatpay-nonce", "")
        signature, serial = lower.get("wechatpay-signature", ""), lower.get("wechatpay-serial", "")
        if not (timestamp and nonce and signature and serial):
            raise SignatureError("missing Wechatpay-* signature headers")
        if signature.startswith(signing.SIGNTEST_PREFIX):
            raise SignatureError("WeChat Pay signature probe (WECHATPAY/SIGNTEST), refused as it must be")
        if (
            not timestamp.isdigit()
            or abs((now if now is not None else time.time()) - int(timestamp)) > signing.TIMESTAMP_WINDOW_SECONDS
        ):
            raise SignatureError("Wechatpay-Timestamp is more than 5 minutes away")
        if not signing.verify(self.key_for(serial, now), signing.response_message(timestamp, nonce, body), signature):
            raise SignatureError("Wechatpay-Signature does not verify")


def decrypt_certificates(payload: dict[str, Any], apiv3_key: bytes) -> list[PlatformCertificate]:
    """The ``/v3/certificates`` answer, decrypted (docs/wechatpay-protocol.md §2.3)."""
    result = []
    for item in payload.get("data", []):
        enc = item["encrypt_certificate"]
        pem = signing.aead_decrypt(apiv3_key, enc["nonce"], enc.get("associated_data", ""), enc["ciphertext"])
        cert = x509.load_pem_x509_certificate(pem)
        public_key = cert.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SignatureError("platform certificate without an RSA key")
        serial = format(cert.serial_number, "X")
        if serial != str(item.get("serial_no", "")).upper():
            raise SignatureError("platform certificate serial does not match its listing")
        result.append(PlatformCertificate(serial, public_key, cert.not_valid_after_utc))
    return result
