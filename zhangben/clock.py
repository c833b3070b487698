"""Time is injected: commands take "now" from a clock, never from the events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

Clock = Callable[[], datetime]

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")


def system_clock() -> datetime:
    return datetime.now(UTC)
