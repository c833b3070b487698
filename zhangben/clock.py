"""Time is injected: commands take "now" from a clock, never from the events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from adapters.wechatpay.beijing import BEIJING

__all__ = ["BEIJING", "Clock", "system_clock"]

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)
