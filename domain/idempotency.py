"""``Idempotency-Key``: the same key with the same body is the same request; with another body, a conflict."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.ids import NAMESPACE


class IdempotencyKey(Aggregate):
    TOPIC = "zhangben.IdempotencyKey"

    class Created(Aggregate.Created):
        TOPIC = "zhangben.IdempotencyKey.Created"
        mchid: str
        key: str
        body_digest: str
        merchant_order_no: str

    @staticmethod
    def create_id(mchid: str, key: str) -> UUID:
        return uuid5(NAMESPACE, f"idempotency/{mchid}/{key}")

    def __init__(self, mchid: str, key: str, body_digest: str, merchant_order_no: str) -> None:
        self.mchid = mchid
        self.key = key
        self.body_digest = body_digest
        self.merchant_order_no = merchant_order_no


def body_digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
