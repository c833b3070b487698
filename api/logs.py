"""Structured JSON logs, one object per line, with the request id; secrets and openids never appear.

Every line goes through ``adapters.redaction`` (query-string secrets, API keys,
bearer tokens, session keys, private keys) whatever logger wrote it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
from datetime import UTC, datetime

from adapters.redaction import redact

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_OPENID = re.compile(r"\bo[A-Za-z0-9_-]{20,}\b")


def mask_openid(text: str) -> str:
    """``oUpF8uMuAJO_M2pxb1Q9zNjWeS6o`` → ``oUpF…S6o``: enough to correlate, not to identify."""
    return _OPENID.sub(lambda m: m.group(0)[:4] + "…" + m.group(0)[-3:], text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(mask_openid(record.getMessage())),
        }
        if request_id.get():
            entry["request_id"] = request_id.get()
        for key in ("method", "route", "status", "duration_ms", "error_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = redact(mask_openid(self.formatException(record.exc_info)))
        return json.dumps(entry, ensure_ascii=False)


LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: int | None = None) -> None:
    """JSON lines on standard error for every long-running process (serve, work, the sandbox, the runners).

    ``ZHANGBEN_LOG_LEVEL`` (debug, info, warning, error; default info) sets the level.
    """
    if level is None:
        level = LEVELS.get(os.environ.get("ZHANGBEN_LOG_LEVEL", "info").lower(), logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())  # redacts every line itself (RedactingFilter is for other formats)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = True  # our own access line carries the request id
    # the scheduler's ticker says "Running job" and "executed successfully" every 5 s at INFO: that is DEBUG
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
