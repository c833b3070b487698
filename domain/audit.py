"""What the ledger refused, kept for auditors: a forged or stale callback is evidence."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.ids import NAMESPACE

# What is kept of a refused callback: enough to see what it was, never enough to flood the store.
BODY_KEPT_BYTES = 4096
HEADER_VALUE_KEPT_CHARS = 512
HEADERS_KEPT = 40


def kept_headers(headers: dict[str, str]) -> dict[str, str]:
    """At most ``HEADERS_KEPT`` headers, each value cut at ``HEADER_VALUE_KEPT_CHARS``."""
    return {k[:100]: v[:HEADER_VALUE_KEPT_CHARS] for k, v in list(headers.items())[:HEADERS_KEPT]}


@dataclass(frozen=True)
class Arrival:
    """A callback as it arrived, before anything is believed of it: the path it came to, the sender's
    address, its headers and raw body, and the merchant that path names (None: a shared path)."""

    path: str
    remote: str
    headers: Mapping[str, str]
    body: bytes
    mchid: str | None = None


class RefusedCallback(Aggregate):
    """A refused callback: who sent it, when, why, its headers and the first 4 KB of its body with the whole's hash.

    The refusal is evidence (rule 3), but a forger choosing the body's size must
    not choose how much the ledger stores: the body is cut and hashed here.
    """

    TOPIC = "zhangben.RefusedCallback"

    class Created(Aggregate.Created):
        TOPIC = "zhangben.RefusedCallback.Created"
        path: str
        remote: str
        headers: dict[str, str]
        body: str
        reason: str
        received_at: datetime
        body_sha256: str
        body_bytes: int
        mchid: str | None  # the merchant whose notify path it came to; None: a shared path, nobody's to see
        class_version = 3

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            body = str(state.get("body", ""))
            state.setdefault("body_sha256", hashlib.sha256(body.encode()).hexdigest())
            state.setdefault("body_bytes", len(body.encode()))

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state.setdefault("mchid", None)

    @staticmethod
    def create_id(path: str, body_sha256: str, reason: str, received_at: datetime) -> UUID:
        return uuid5(NAMESPACE, f"refused/{path}/{received_at.isoformat()}/{body_sha256}/{reason}")

    def __init__(
        self,
        path: str,
        remote: str,
        headers: dict[str, str],
        body: str,
        reason: str,
        received_at: datetime,
        body_sha256: str = "",
        body_bytes: int = 0,
        mchid: str | None = None,
    ) -> None:
        self.path = path
        self.remote = remote
        self.headers = headers
        self.body = body
        self.reason = reason
        self.received_at = received_at
        self.body_sha256 = body_sha256
        self.body_bytes = body_bytes
        self.mchid = mchid

    @classmethod
    def of(cls, arrival: Arrival, reason: str, received_at: datetime) -> RefusedCallback:
        """The bounded record of a refusal: the body's first 4 KB (as text), its size and SHA-256."""
        body = arrival.body
        return cls(
            path=arrival.path[:200],
            remote=arrival.remote[:64],
            headers=kept_headers(dict(arrival.headers)),
            body=body[:BODY_KEPT_BYTES].decode("utf-8", "replace"),
            reason=reason[:500],
            received_at=received_at,
            body_sha256=hashlib.sha256(body).hexdigest(),
            body_bytes=len(body),
            mchid=arrival.mchid,
        )
