"""The sandbox's own clock: real time plus an offset moved by ``POST /sandbox/clock``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.wechatpay.beijing import BEIJING, rfc3339
from sandbox.store import SandboxStore

__all__ = ["BEIJING", "SandboxClock", "rfc3339"]


class SandboxClock:
    def __init__(self, store: SandboxStore) -> None:
        self._store = store

    @property
    def offset_seconds(self) -> float:
        return float((self._store.get("kv", "clock") or {}).get("offset_seconds", 0))

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset_seconds)

    def advance(self, seconds: float) -> datetime:
        with self._store.transaction():
            self._store.put("kv", "clock", {"offset_seconds": self.offset_seconds + seconds})
        return self.now()
