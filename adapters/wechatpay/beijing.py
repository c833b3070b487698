"""WeChat Pay's time: Beijing (UTC+8), written RFC 3339 to the second (docs/wechatpay-protocol.md §4.2)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")


def rfc3339(moment: datetime) -> str:
    """``2026-11-22T10:00:00+08:00``: seconds, ``+08:00``, as WeChat writes and expects it."""
    return moment.astimezone(BEIJING).replace(microsecond=0).isoformat()


def beijing_iso(moment: datetime) -> str:
    """ISO 8601 in Beijing time with its offset (``…+08:00``), microseconds kept: every time the API answers.

    Storage is UTC; what people and clients see is Beijing time, as WeChat and its bills write it (docs/api.md).
    """
    return moment.astimezone(BEIJING).isoformat()


def compact(moment: datetime) -> str:
    """``20261122100000``: API v2's ``yyyyMMddHHmmss``, always Beijing time (docs/wechatpay-protocol.md §6.2)."""
    return moment.astimezone(BEIJING).strftime("%Y%m%d%H%M%S")


def from_compact(text: str) -> datetime:
    """API v2's ``yyyyMMddHHmmss`` (Beijing) as an aware datetime; ``ValueError`` if it is not one."""
    return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)


def wall_clock(value: Any) -> datetime | None:
    """An ISO time (any offset) or a datetime as Beijing wall-clock time, without a zone (what an Excel cell or a
    person reads); None for nothing.  A time without an offset is taken as already Beijing."""
    if value in (None, ""):
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(BEIJING).replace(tzinfo=None) if moment.tzinfo is not None else moment


def shown(value: Any) -> str:
    """``2026-11-22 10:00:00``: a time as a person reads it (Beijing), or "" for nothing."""
    moment = wall_clock(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""
