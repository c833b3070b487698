"""The signature on the payer's way back to the shop (``return_url``): Ed25519, so the shop verifies with a public key.

After the payer pays, the cashier page sends them to the order's ``return_url`` with the order's number, status and
amount.  A payer could type that URL by hand, so the parameters are signed; the shop checks the signature with the
deployment's public key (``GET /v1/return-key``, docs/api.md "Back to the shop") — no shared secret to hand out
or leak.  The private key is derived from ``cashier_key_file`` (HMAC-SHA256 with its own purpose), so every worker
signs alike and rotating that file rotates this key too (the key id says which one signed).
https://www.rfc-editor.org/rfc/rfc8032 (Ed25519).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_PURPOSE = b"zhangben return-url signing v1"
FIELDS = ("kid", "mchid", "merchant_order_no", "status", "paid_fen", "ts")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def message(params: dict[str, str]) -> bytes:
    """What is signed: the fields in ``FIELDS`` order, one per line (values never hold a newline)."""
    return "\n".join(params[name] for name in FIELDS).encode()


class ReturnSigner:
    """Signs the parameters of a way back to the shop with the deployment's key."""

    def __init__(self, cashier_key: bytes) -> None:
        seed = hmac.new(cashier_key, _PURPOSE, hashlib.sha256).digest()
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        raw = self._private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]
        self.public_pem = (
            self._private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def sign(self, params: dict[str, str]) -> str:
        return _b64(self._private.sign(message({**params, "kid": self.key_id})))


def verify(public_pem: str, params: dict[str, str]) -> bool:
    """The shop's check (docs/api.md shows the same in a few lines): the signature holds over the fields."""
    key = serialization.load_pem_public_key(public_pem.encode())
    if not isinstance(key, Ed25519PublicKey) or not all(name in params for name in (*FIELDS, "sig")):
        return False
    try:
        key.verify(base64.urlsafe_b64decode(params["sig"] + "=" * (-len(params["sig"]) % 4)), message(params))
    except (InvalidSignature, ValueError):
        return False
    return True
