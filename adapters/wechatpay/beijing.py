"""WeChat Pay's time: Beijing (UTC+8), written RFC 3339 to the second (docs/wechatpay-protocol.md §4.2)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")


def rfc3339(moment: datetime) -> str:
    """``2026-11-22T10:00:00+08:00``: seconds, ``+08:00``, as WeChat writes and expects it."""
    return moment.astimezone(BEIJING).replace(microsecond=0).isoformat()
