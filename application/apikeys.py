"""API keys: printed once, stored only as a salted hash, compared in constant time.

A key is ``zb_<key id>_<secret>``.  The secret is 32 random bytes, so a
salted SHA-256 is enough (nothing to brute-force); the key id finds the
stored hash without scanning.  ``ApiKeys`` holds the commands: issue, list,
revoke, rotate (https://owasp.org/www-project-api-security/ on keys kept as hashes).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import StoredEvent

from application.ledger import AsyncStore, Ledger, retry_on_conflict
from domain.apikey import ROLES, ApiKey, Principal
from domain.errors import Conflict, NotFound

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
        record = None
    return checked(record, secret, now)


def checked(record: ApiKey | None, secret: str, now: datetime) -> Principal | None:
    """Who ``record`` names, if ``secret`` is its secret and it is usable at ``now``; the same work if absent."""
    if record is None:
        _digest("00" * 16, secret)  # same work as a real check
        return None
    if not hmac.compare_digest(record.digest, _digest(record.salt, secret)) or not record.usable_at(now):
        return None
    return Principal(key_id=record.key_id, mchid=record.mchid, role=record.role)


# A key's record read from the directory stands in for it while the directory's cell fails over (Patroni
# promotes within its TTL and a loop: ~20 s), for at most this long after it was read: a revocation needs the
# directory to be written, so none can be made while it is down; one made in the minute before may be late.
RECENT_SECONDS = 60
RECENT_KEYS = 10_000
RETRY_SECONDS = 1.0
WAIT_SECONDS = 0.25  # how long a key read recently waits for the directory before it stands in (a read takes ms)


class ApiKeys:
    """The commands on API keys, over the ledger's store; only hashes are ever saved."""

    def __init__(self, ledger: Ledger, unavailable: Callable[[BaseException], bool] = lambda exc: False) -> None:
        self.ledger = ledger
        # the keys live in the directory, on the first cell: while that cell fails over, a key read from it
        # within the last RECENT_SECONDS still opens its merchant's partition on another cell (docs/scale-out.md)
        self.unavailable = unavailable
        self.available: Callable[[], bool] = lambda: True  # the directory's cell takes requests (the HTTP gates)
        self._recent: dict[UUID, tuple[ApiKey, float]] = {}
        self._down_until = 0.0  # the directory failed a read: recent keys stand in until then

    def issue_api_key(self, mchid: str, role: str, expires_at: datetime | None = None) -> str:
        """A new API key for ``mchid`` in ``role``: returned once, only its hash is stored."""
        key, record = issue(mchid, role, self.ledger.clock(), expires_at)
        self.ledger.save(record)
        return key

    def authenticate(self, key: str) -> Principal | None:
        """Who holds ``key``, or None (the same work either way)."""
        return authenticate(self.ledger.repository.get, key, self.ledger.clock())

    async def authenticate_async(self, key: str) -> Principal | None:
        """The same from the event loop: through the store's async path where there is one, else on a thread
        (every merchant request asks this first: no thread hop for it)."""
        store = self.ledger.async_store
        if store is None:
            return await asyncio.to_thread(self.authenticate, key)
        parsed = parse(key)
        if parsed is None:
            return None
        key_id, secret = parsed
        aggregate_id = ApiKey.create_id(key_id)
        recent = self._recent.get(aggregate_id)
        if recent is not None and time.monotonic() - recent[1] > RECENT_SECONDS:
            recent = None
        if recent is not None and (not self.available() or time.monotonic() < self._down_until):
            return checked(recent[0], secret, self.ledger.clock())
        if recent is None:  # nothing stands in for a key never read: it waits, and a failure is the request's
            found = await store.load_many([aggregate_id])
        else:
            read = await self._read_or_give_up(store, aggregate_id)
            if read is None:
                return checked(recent[0], secret, self.ledger.clock())
            found = read
        record = found.get(aggregate_id)
        if record is not None:
            if len(self._recent) >= RECENT_KEYS:
                self._recent.clear()
            self._recent[aggregate_id] = (record, time.monotonic())
        return checked(record, secret, self.ledger.clock())

    async def _read_or_give_up(self, store: AsyncStore, aggregate_id: UUID) -> dict[UUID, Any] | None:
        """The key's record from the directory, or None when the read hangs past ``WAIT_SECONDS`` (a frozen primary
        does not fail, it hangs; the read is left to end by itself, since cancelling a query on a frozen server
        waits for it too) or fails as an unavailable database does: a recent record then stands in, and for
        ``RETRY_SECONDS`` the next requests do not ask."""
        load = asyncio.ensure_future(store.load_many([aggregate_id]))
        await asyncio.wait({load}, timeout=WAIT_SECONDS)
        if not load.done():
            load.add_done_callback(lambda done: done.cancelled() or done.exception())
        else:
            try:
                return load.result()
            except Exception as exc:
                if not self.unavailable(exc):
                    raise
        self._down_until = time.monotonic() + RETRY_SECONDS
        return None

    def api_keys(self, mchid: str | None = None) -> list[ApiKey]:
        """Every key issued (revoked and expired ones too), oldest first; never a secret, only ids."""
        return [k for k in self.ledger.created(ApiKey.Created.TOPIC) if mchid is None or k.mchid == mchid]

    def _api_key(self, key_id: str) -> ApiKey:
        try:
            return self.ledger.repository.get(ApiKey.create_id(key_id))
        except AggregateNotFoundError:
            raise NotFound(f"API key {key_id!r} not found") from None

    @retry_on_conflict
    def revoke_api_key(self, key_id: str, reason: str = "revoked") -> ApiKey:
        """The key stops working now, in every worker (each request reads it from the event store)."""
        record = self._api_key(key_id)
        record.revoke(self.ledger.clock(), reason)
        self.ledger.save(record)
        return record

    @retry_on_conflict
    def rotate_api_key(self, key_id: str, grace: timedelta) -> tuple[str, ApiKey]:
        """A new key with the same merchant and role; the old one keeps working for ``grace``, then expires."""
        old = self._api_key(key_id)
        now = self.ledger.clock()
        if not old.usable_at(now):
            raise Conflict(f"API key {key_id!r} is revoked or expired: create a new one instead")
        key, new = issue(old.mchid, old.role, now, old.expires_at)
        old.expire(now + grace, f"rotated to {new.key_id}")
        self.ledger.save(old, new)
        return key, new


KEY_TOPICS = (ApiKey.Created.TOPIC, ApiKey.Expiring.TOPIC, ApiKey.Revoked.TOPIC)


def move_keys_to_directory(partition: Ledger, directory: Ledger) -> int:
    """Copy the API keys a database of before partitions kept in its one log into the directory's log, once.

    A key names its merchant only once it is checked, so keys live in the
    directory, not a partition (docs/scale-out.md).  Each event is copied as
    stored (same aggregate, version, topic and state), so a key issued
    before the upgrade still works; a directory that already holds keys is
    left alone.  Returns the number of events copied.
    """
    if directory.recorder.select_notifications(1, 1, topics=KEY_TOPICS):
        return 0
    copied: list[StoredEvent] = []
    start = 1
    while page := partition.recorder.select_notifications(start, 1000, topics=KEY_TOPICS):
        copied += [StoredEvent(n.originator_id, n.originator_version, n.topic, n.state) for n in page]
        start = page[-1].id + 1
    if copied:
        directory.recorder.insert_events(copied)
    return len(copied)
