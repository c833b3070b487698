"""What the ledger refused, kept for auditors: a forged or stale callback is evidence."""

from __future__ import annotations

import hashlib
from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.ids import NAMESPACE


class RefusedCallback(Aggregate):
    TOPIC = "zhangben.RefusedCallback"

    class Created(Aggregate.Created):
        TOPIC = "zhangben.RefusedCallback.Created"
        path: str
        remote: str
        headers: dict[str, str]
        body: str
        reason: str
        received_at: datetime

    @staticmethod
    def create_id(path: str, body: str, reason: str, received_at: datetime) -> UUID:
        digest = hashlib.sha256(body.encode()).hexdigest()
        return uuid5(NAMESPACE, f"refused/{path}/{received_at.isoformat()}/{digest}/{reason}")

    def __init__(
        self, path: str, remote: str, headers: dict[str, str], body: str, reason: str, received_at: datetime
    ) -> None:
        self.path = path
        self.remote = remote
        self.headers = headers
        self.body = body
        self.reason = reason
        self.received_at = received_at
