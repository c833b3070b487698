"""Secrets out of log lines: whatever a library or our own code writes, the handler redacts it.

httpx logs every request's full URL at INFO, and WeChat's login and web
authorisation APIs take the appsecret and the one-time code in the query
string (``/sns/jscode2session?appid=…&secret=…&js_code=…``); an exception's
text may carry a JSON answer with a ``session_key``.  Redacting at the logging
layer catches them wherever they come from, rather than trusting every call
site to remember.  What is kept is enough to read the line: the parameter's
name, the first characters of an API key's public id.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
# the names of fields whose values are secret (not secrets themselves); in a query string also the one-time codes
_SECRET_NAMES = "|".join(
    (
        "secret",
        "appsecret",
        "access_token",
        "refresh_token",
        "session_key",
        "sign",
        "paysign",
        "token",
        "api_key",
        "key",
        "password",
    )
)
_QUERY = re.compile(rf"(?i)([?&;](?:{_SECRET_NAMES}|js_code|code)=)[^&\s\"'<>#]+")
_JSON = re.compile(rf"(?i)(\"(?:{_SECRET_NAMES}|signature|authorization)\"\s*:\s*\")[^\"]*(\")")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_API_KEY = re.compile(r"\b(zb_[0-9a-f]{16})_[A-Za-z0-9_-]+")
_WEBHOOK_SECRET = re.compile(r"\bwhsec_[A-Za-z0-9_-]+")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S)


def redact(text: str) -> str:
    """``…?appid=wx1&secret=abc&js_code=x`` → ``…?appid=wx1&secret=***&js_code=***``, and the like."""
    text = _QUERY.sub(rf"\g<1>{MASK}", text)
    text = _JSON.sub(rf"\g<1>{MASK}\g<2>", text)
    text = _BEARER.sub(rf"\g<1>{MASK}", text)
    text = _API_KEY.sub(rf"\g<1>_{MASK}", text)
    text = _WEBHOOK_SECRET.sub(f"whsec_{MASK}", text)
    return _PEM.sub(f"[private key {MASK}]", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and its exception text) redacted, for any formatter after it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
