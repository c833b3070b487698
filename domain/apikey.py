"""An API key's record: which merchant, which role, and only a salted hash of the secret.

Keys are small aggregates in the event store, so issuing one is on the
record like everything else; ``application.apikeys`` issues and checks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.ids import NAMESPACE

# support (客服): sees orders, asks WeChat, notes; no refunds.  operator: the deployment's, not a merchant's (its
# key names no merchant): sees what no merchant owns, such as callbacks refused on a shared notify path
# provider: a service provider's (服务商) own key, naming its sp_mchid: adds and changes its sub-merchants
ROLES = ("merchant", "auditor", "finance", "support", "operator", "provider")
PROVIDER = "provider"
OPERATOR = "operator"
DEPLOYMENT = ""  # the "merchant" of an operator's key: none


class ApiKey(Aggregate):
    TOPIC = "zhangben.ApiKey"

    class Created(Aggregate.Created):
        TOPIC = "zhangben.ApiKey.Created"
        key_id: str
        mchid: str
        role: str
        salt: str
        digest: str
        issued_at: datetime
        expires_at: datetime | None
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("expires_at", None)

    class Expiring(Aggregate.Event):
        """The key stops working at ``expires_at`` (a rotation's grace period, or an expiry set later)."""

        TOPIC = "zhangben.ApiKey.Expiring"
        expires_at: datetime
        reason: str

        def apply(self, key: ApiKey) -> None:
            key.expires_at = self.expires_at

    class Revoked(Aggregate.Event):
        TOPIC = "zhangben.ApiKey.Revoked"
        revoked_at: datetime
        reason: str

        def apply(self, key: ApiKey) -> None:
            key.revoked_at = self.revoked_at

    @staticmethod
    def create_id(key_id: str) -> UUID:
        return uuid5(NAMESPACE, f"apikey/{key_id}")

    def __init__(
        self,
        key_id: str,
        mchid: str,
        role: str,
        salt: str,
        digest: str,
        issued_at: datetime,
        expires_at: datetime | None = None,
    ) -> None:
        self.key_id = key_id
        self.mchid = mchid
        self.role = role
        self.salt = salt
        self.digest = digest
        self.issued_at = issued_at
        self.expires_at = expires_at
        self.revoked_at: datetime | None = None

    def usable_at(self, now: datetime) -> bool:
        """Not revoked, and not past its expiry."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def expire(self, expires_at: datetime, reason: str) -> None:
        if self.revoked_at is None and (self.expires_at is None or expires_at < self.expires_at):
            self.trigger_event(self.Expiring, expires_at=expires_at, reason=reason)

    def revoke(self, revoked_at: datetime, reason: str) -> None:
        if self.revoked_at is None:  # revoking twice changes nothing
            self.trigger_event(self.Revoked, revoked_at=revoked_at, reason=reason)


@dataclass(frozen=True)
class Principal:
    """Who is calling: one merchant, one role."""

    key_id: str
    mchid: str
    role: str

    @property
    def actor(self) -> str:
        """Who did it, as events record it: the role and the key's id (never the key)."""
        return f"{self.role} {self.key_id}"
