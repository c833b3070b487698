"""A WeChat Pay merchant written only from the protocol (docs/wechatpay-protocol.md), with ``httpx`` and ``cryptography``.

It shares no code with the sandbox or the adapter, so a mistake in the
project's own signing cannot hide by being made twice.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


@dataclass
class SpecMerchant:
    base_url: str
    mchid: str
    serial_no: str
    private_key_pem: bytes
    apiv3_key: bytes
    platform_keys: dict[str, Any] = field(default_factory=dict)  # Wechatpay-Serial → public key
    send_serial: str | None = None  # Wechatpay-Serial header on requests (public-key mode)

    def __post_init__(self) -> None:
        self._key = serialization.load_pem_private_key(self.private_key_pem, password=None)
        self.http = httpx.Client(base_url=self.base_url, timeout=10)

    @classmethod
    def from_files(cls, base_url: str, keys: Path, mchid: str, public_key_id: str) -> SpecMerchant:
        cert = x509.load_pem_x509_certificate((keys / mchid / "apiclient_cert.pem").read_bytes())
        pub = serialization.load_pem_public_key((keys / "wechatpay" / "pub_key.pem").read_bytes())
        return cls(
            base_url=base_url,
            mchid=mchid,
            serial_no=format(cert.serial_number, "X"),
            private_key_pem=(keys / mchid / "apiclient_key.pem").read_bytes(),
            apiv3_key=(keys / mchid / "apiv3_key").read_bytes().strip(),
            platform_keys={public_key_id: pub},
        )

    def authorization(self, method: str, url: str, body: bytes, timestamp: int | None = None) -> str:
        ts = str(timestamp if timestamp is not None else int(time.time()))
        nonce = secrets.token_hex(16).upper()
        message = f"{method}\n{url}\n{ts}\n{nonce}\n".encode() + body + b"\n"
        signature = base64.b64encode(self._key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()
        return (
            f'WECHATPAY2-SHA256-RSA2048 mchid="{self.mchid}",nonce_str="{nonce}",'
            f'signature="{signature}",timestamp="{ts}",serial_no="{self.serial_no}"'
        )

    def call(
        self,
        method: str,
        url: str,
        payload: Any = None,
        *,
        timestamp: int | None = None,
        authorization: str | None = None,
        raw: bytes | None = None,
    ) -> httpx.Response:
        body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        headers = {
            "Accept": "application/json",
            "Authorization": authorization or self.authorization(method, url, body, timestamp),
        }
        if body:
            headers["Content-Type"] = "application/json"
        if self.send_serial:
            headers["Wechatpay-Serial"] = self.send_serial
        return self.http.request(method, url, content=body, headers=headers)

    def verified(self, response: httpx.Response) -> bool:
        """docs/wechatpay-protocol.md §2.2: ``TIMESTAMP\\nNONCE\\nBODY\\n`` signed by the key ``Wechatpay-Serial`` names."""
        return verify_signed(self.platform_keys, response.headers, response.content)

    def decrypt(self, resource: dict[str, str]) -> dict[str, Any]:
        plain = AESGCM(self.apiv3_key).decrypt(
            resource["nonce"].encode(), base64.b64decode(resource["ciphertext"]), resource["associated_data"].encode()
        )
        return json.loads(plain)


def verify_signed(keys: dict[str, Any], headers: Any, body: bytes) -> bool:
    if headers.get("Wechatpay-Signature-Type") != "WECHATPAY2-SHA256-RSA2048":
        return False
    key = keys.get(headers.get("Wechatpay-Serial", ""))
    if key is None:
        return False
    if abs(time.time() - int(headers["Wechatpay-Timestamp"])) > 300:
        return False
    message = f"{headers['Wechatpay-Timestamp']}\n{headers['Wechatpay-Nonce']}\n".encode() + body + b"\n"
    try:
        key.verify(base64.b64decode(headers["Wechatpay-Signature"]), message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class NotifyReceiver:
    """The merchant's notify_url: records every delivery, answers as told."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[int] = []  # statuses to answer first, in order; then 204
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append(Received(dict(self.headers), body))
                    status = receiver.answers.pop(0) if receiver.answers else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/wechatpay/v3/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} notifications, got {len(self.received)}")

    def close(self) -> None:
        self.server.shutdown()
