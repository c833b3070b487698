"""Both ends of WeChat Pay API v2, written from the protocol alone (docs/wechatpay-protocol.md §5, §6).

``SpecV2Merchant`` calls the sandbox's v2 endpoints; ``SpecV2Wechat`` plays
WeChat towards the ledger's v2 callbacks.  Signatures with ``hashlib`` and
``hmac``, ``req_info`` with ``cryptography``'s AES-ECB, XML by string
templates out and ``defusedxml`` in: no code shared with the adapter or the
sandbox, so a mistake in the project's v2 code cannot hide by being made twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml.ElementTree import fromstring


def sign(fields: dict[str, str], key: str, sign_type: str = "MD5") -> str:
    """§6.1: non-empty fields but sign, ASCII order, ``k=v&…&key=KEY``; MD5 or HMAC-SHA256 (keyed with KEY), upper hex."""
    text = "&".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "sign" and fields[k] != "") + f"&key={key}"
    if sign_type == "HMAC-SHA256":
        return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest().upper()
    return hashlib.md5(text.encode()).hexdigest().upper()


def signed_ok(fields: dict[str, str], key: str, sign_type: str | None = None) -> bool:
    kind = sign_type or fields.get("sign_type") or "MD5"
    return hmac.compare_digest(sign(fields, key, kind), fields.get("sign", ""))


def xml(fields: dict[str, str], root: str = "xml") -> bytes:
    return (f"<{root}>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items()) + f"</{root}>").encode()


def parse(body: bytes) -> dict[str, str]:
    return {child.tag: child.text or "" for child in fromstring(body)}


def _ecb(api_key: str) -> Cipher[modes.ECB]:
    return Cipher(algorithms.AES(hashlib.md5(api_key.encode()).hexdigest().encode()), modes.ECB())  # noqa: S305


def encrypt_req_info(fields: dict[str, str], api_key: str) -> str:
    """§6.4: ``<root>`` XML, PKCS7 to 16 bytes, AES-256-ECB under the lowercase hex MD5 of the key, base64."""
    padder = padding.PKCS7(128).padder()
    data = padder.update(xml(fields, "root")) + padder.finalize()
    encryptor = _ecb(api_key).encryptor()
    return base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()


def decrypt_req_info(req_info: str, api_key: str) -> dict[str, str]:
    decryptor = _ecb(api_key).decryptor()
    data = decryptor.update(base64.b64decode(req_info)) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return parse(unpadder.update(data) + unpadder.finalize())


def read_key(keys: Path, mchid: str) -> str:
    return (keys / mchid / "v2_key").read_text().strip()


@dataclass
class SpecV2Merchant:
    """A v2 merchant calling WeChat (the sandbox): every answer's sign checked before a field is used."""

    base_url: str
    mch_id: str
    appid: str
    key: str
    sign_type: str = "MD5"
    secapi_url: str = ""
    client_cert: tuple[str, str] | None = None  # (apiclient_cert.pem, apiclient_key.pem)
    ca_file: str | None = None
    partner: dict[str, str] = field(default_factory=dict)  # sub_mch_id (+ sub_appid) in partner mode

    def request(self, path: str, **params: str) -> bytes:
        fields = {"appid": self.appid, "mch_id": self.mch_id, **self.partner, "nonce_str": secrets.token_hex(16)}
        fields |= params
        if self.sign_type != "MD5":
            fields["sign_type"] = self.sign_type
        fields["sign"] = sign(fields, self.key, self.sign_type)
        return xml(fields)

    def post(self, path: str, **params: str) -> dict[str, str]:
        answer = parse(self.raw(path, **params).content)
        if answer.get("return_code") == "SUCCESS":
            assert signed_ok(answer, self.key, self.sign_type), f"answer to {path} is not signed right: {answer}"
        return answer

    def raw(self, path: str, **params: str) -> httpx.Response:
        if path.startswith("/secapi/"):
            with httpx.Client(verify=self._tls_context(), timeout=10) as client:
                return client.post(self.secapi_url + path, content=self.request(path, **params))
        return httpx.post(self.base_url + path, content=self.request(path, **params), timeout=10)

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert:
            context.load_cert_chain(*self.client_cert)
        return context


class XmlReceiver:
    """A v2 notify_url: keeps every delivery; answers SUCCESS XML, or what the test queued first."""

    def __init__(self, path: str = "/notify") -> None:
        self.received: list[bytes] = []
        self.answers: list[bytes] = []
        self.handler: Any = None  # optional: body → answer bytes (Native mode 1's callback)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append(body)
                    if receiver.handler is not None:
                        answer = receiver.handler(body)
                    elif receiver.answers:
                        answer = receiver.answers.pop(0)
                    else:
                        answer = xml({"return_code": "SUCCESS", "return_msg": "OK"})
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 10) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} deliveries, got {len(self.received)}")

    def close(self) -> None:
        self.server.shutdown()


@dataclass
class SpecV2Wechat:
    """WeChat sending v2 callbacks to the ledger."""

    mch_id: str
    appid: str
    key: str
    sign_type: str = "MD5"
    partner: dict[str, str] = field(default_factory=dict)

    def pay_notification(
        self, out_trade_no: str, total_fee: int, cash_fee: int | None = None, **extra: str
    ) -> dict[str, str]:
        fields = {
            "appid": self.appid,
            "mch_id": self.mch_id,
            **self.partner,
            "nonce_str": secrets.token_hex(16),
            "result_code": "SUCCESS",
            "return_code": "SUCCESS",
            "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            "is_subscribe": "N",
            "trade_type": "NATIVE",
            "bank_type": "OTHERS",
            "total_fee": str(total_fee),
            "fee_type": "CNY",
            "cash_fee": str(total_fee if cash_fee is None else cash_fee),
            "transaction_id": "42" + time.strftime("%Y%m%d") + f"{secrets.randbelow(10**18):018d}",
            "out_trade_no": out_trade_no,
            "time_end": time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() + 8 * 3600)),
        }
        if cash_fee is not None and cash_fee < total_fee:
            fields |= {
                "coupon_fee": str(total_fee - cash_fee),
                "coupon_count": "1",
                "coupon_id_0": "10000000001",
                "coupon_fee_0": str(total_fee - cash_fee),
                "coupon_type_0": "CASH",
            }
        return fields | extra

    def signed(self, fields: dict[str, str], key: str | None = None, sign_type: str | None = None) -> bytes:
        kind = sign_type or self.sign_type
        out = dict(fields)
        if kind != "MD5" or sign_type:
            out["sign_type"] = kind
        out["sign"] = sign(out, key or self.key, kind)
        return xml(out)

    def refund_notification(self, plain: dict[str, str], key: str | None = None) -> bytes:
        return xml(
            {
                "return_code": "SUCCESS",
                "appid": self.appid,
                "mch_id": self.mch_id,
                **self.partner,
                "nonce_str": secrets.token_hex(16),
                "req_info": encrypt_req_info(plain, key or self.key),
            }
        )
