"""The system clock: the one place the running service reads "now" (tests and the tour inject their own)."""

from __future__ import annotations

from datetime import UTC, datetime


def system_clock() -> datetime:
    return datetime.now(UTC)
