"""WeChat Pay APIv3 signatures and AEAD, as pure functions (docs/wechatpay-protocol.md §1, §2, §3.2, §5).

Every function works on raw bytes: a signature is checked over the exact
bytes that travelled, never over re-serialised JSON (docs/wechatpay-protocol.md §9.1).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.wechatpay.errors import SignatureError

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"
TIMESTAMP_WINDOW_SECONDS = 300

__all__ = ["SignatureError"]  # re-exported: callers of the pure functions catch it from here


def new_nonce() -> str:
    """32 upper-case hex characters, as the official SDKs send."""
    return secrets.token_hex(16).upper()


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SignatureError("not an RSA private key")
    return key


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """A public key from SPKI PEM (``pub_key.pem``) or from a certificate PEM."""
    key = (
        x509.load_pem_x509_certificate(pem).public_key()
        if b"BEGIN CERTIFICATE" in pem
        else serialization.load_pem_public_key(pem)
    )
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("not an RSA public key")
    return key


def certificate_serial(pem: bytes) -> str:
    """The certificate's serial as WeChat writes it: upper-case hex."""
    return format(x509.load_pem_x509_certificate(pem).serial_number, "X")


def sign(private_key: rsa.RSAPrivateKey, message: bytes) -> str:
    """RSASSA-PKCS1-v1_5 with SHA-256, standard base64."""
    return base64.b64encode(private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify(public_key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    """True only for a valid signature; probes and garbage are simply False."""
    if signature.startswith(SIGNTEST_PREFIX):
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def request_message(method: str, canonical_url: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`` (docs/wechatpay-protocol.md §1)."""
    head = f"{method.upper()}\n{canonical_url}\n{timestamp}\n{nonce}\n".encode()
    return head + body + b"\n"


def response_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """``TIMESTAMP\\nNONCE\\nBODY\\n`` for responses and callbacks (docs/wechatpay-protocol.md §2.2)."""
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


@dataclass(frozen=True)
class Signer:
    """Who signs a request to WeChat: the merchant, its API certificate's serial number and private key."""

    mchid: str
    serial_no: str
    private_key: rsa.RSAPrivateKey


def build_authorization(
    signer: Signer, method: str, canonical_url: str, body: bytes, timestamp: str, nonce: str
) -> str:
    """The ``Authorization`` header over the request's signing message
    (https://pay.weixin.qq.com/doc/v3/merchant/4012365336)."""
    signature = sign(signer.private_key, request_message(method, canonical_url, timestamp, nonce, body))
    return (
        f'{SCHEMA} mchid="{signer.mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{signer.serial_no}"'
    )


@dataclass(frozen=True)
class Authorization:
    mchid: str
    nonce_str: str
    signature: str
    timestamp: str
    serial_no: str


_PAIR = re.compile(r'\s*([a-z_]+)="([^"]*)"\s*')


def parse_authorization(header: str) -> Authorization:
    """Parse the ``Authorization`` header; the five pairs may come in any order."""
    schema, _, rest = header.strip().partition(" ")
    if schema != SCHEMA:
        raise SignatureError("Authorization does not use WECHATPAY2-SHA256-RSA2048")
    pairs: dict[str, str] = {}
    for part in rest.split(","):
        match = _PAIR.fullmatch(part)
        if not match:
            raise SignatureError('Authorization is not five key="value" pairs')
        pairs[match.group(1)] = match.group(2)
    try:
        return Authorization(**{k: pairs[k] for k in ("mchid", "nonce_str", "signature", "timestamp", "serial_no")})
    except KeyError as missing:
        raise SignatureError(f"Authorization has no {missing.args[0]}") from None


def aead_encrypt(key: bytes, nonce: str, associated_data: str, plaintext: bytes) -> str:
    """AEAD_AES_256_GCM as WeChat uses it: base64(ciphertext ‖ tag)."""
    return base64.b64encode(AESGCM(key).encrypt(nonce.encode(), plaintext, associated_data.encode())).decode()


def aead_decrypt(key: bytes, nonce: str, associated_data: str, ciphertext: str) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce.encode(), base64.b64decode(ciphertext), associated_data.encode())
    except (InvalidTag, ValueError, binascii.Error):
        raise SignatureError("ciphertext does not decrypt with the APIv3 key (wrong key or tampered)") from None


def jsapi_pay_sign(private_key: rsa.RSAPrivateKey, appid: str, timestamp: str, nonce: str, package: str) -> str:
    """``paySign`` for ``wx.requestPayment`` / JSAPI (docs/wechatpay-protocol.md §5)."""
    return sign(private_key, f"{appid}\n{timestamp}\n{nonce}\n{package}\n".encode())


def app_pay_sign(private_key: rsa.RSAPrivateKey, appid: str, timestamp: str, nonce: str, prepay_id: str) -> str:
    """``sign`` for the App SDK's PayReq (docs/wechatpay-protocol.md §5)."""
    return sign(private_key, f"{appid}\n{timestamp}\n{nonce}\n{prepay_id}\n".encode())
