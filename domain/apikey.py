"""An API key's record: which merchant, which role, and only a salted hash of the secret.

Keys are small aggregates in the event store, so issuing one is on the
record like everything else; ``application.apikeys`` issues and checks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.ids import NAMESPACE

ROLES = ("merchant", "auditor", "finance")


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

    @staticmethod
    def create_id(key_id: str) -> UUID:
        return uuid5(NAMESPACE, f"apikey/{key_id}")

    def __init__(self, key_id: str, mchid: str, role: str, salt: str, digest: str, issued_at: datetime) -> None:
        self.key_id = key_id
        self.mchid = mchid
        self.role = role
        self.salt = salt
        self.digest = digest
        self.issued_at = issued_at


@dataclass(frozen=True)
class Principal:
    """Who is calling: one merchant, one role."""

    key_id: str
    mchid: str
    role: str
