"""API keys: printed once, stored only as a salted hash, compared in constant time.

A key is ``zb_<key id>_<secret>``.  The secret is 32 random bytes, so a
salted SHA-256 is enough (nothing to brute-force); the key id finds the
stored hash without scanning.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from domain.apikey import ROLES, ApiKey, Principal

PREFIX = "zb_"


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def issue(mchid: str, role: str, issued_at: datetime, expires_at: datetime | None = None) -> tuple[str, ApiKey]:
    """A new key (shown once) and the aggregate that remembers only its hash (and when it expires, if ever)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_hex(16)
    record = ApiKey(
        key_id=key_id,
        mchid=mchid,
        role=role,
        salt=salt,
        digest=_digest(salt, secret),
        issued_at=issued_at,
        expires_at=expires_at,
    )
    return f"{PREFIX}{key_id}_{secret}", record


def parse(key: str) -> tuple[str, str] | None:
    if not key.startswith(PREFIX):
        return None
    key_id, sep, secret = key[len(PREFIX) :].partition("_")
    if not sep or len(key_id) != 16 or not secret:
        return None
    return key_id, secret


def authenticate(get_key: Callable[[UUID], ApiKey], key: str, now: datetime) -> Principal | None:
    """The principal for ``key``, or None (unknown, wrong, revoked or expired); the same work either way.

    The key is read from the event store on every request, so a revocation
    holds at once in every worker.
    """
    parsed = parse(key)
    if parsed is None:
        return None
    key_id, secret = parsed
    try:
        record = get_key(ApiKey.create_id(key_id))
    except AggregateNotFoundError:
        _digest("00" * 16, secret)  # same work as a real check
        return None
    if not hmac.compare_digest(record.digest, _digest(record.salt, secret)) or not record.usable_at(now):
        return None
    return Principal(key_id=record.key_id, mchid=record.mchid, role=record.role)
