"""Secrets are redacted from log lines whoever wrote them (adapters/redaction.py)."""

from __future__ import annotations

import io
import logging

import pytest

from adapters.redaction import RedactingFilter, redact
from api.logs import JsonFormatter


@pytest.mark.parametrize(
    ("line", "secret", "kept"),
    [
        (
            "HTTP Request: GET https://api.weixin.qq.com/sns/jscode2session?appid=wx1&secret=9f8e7d&js_code=0a1B"
            '&grant_type=authorization_code "HTTP/1.1 200 OK"',
            "9f8e7d",
            "appid=wx1&secret=***&js_code=***&grant_type=authorization_code",
        ),
        ("GET /sns/oauth2/access_token?appid=wx2&secret=s3cr3t&code=C0DE", "C0DE", "secret=***&code=***"),
        ('answer {"openid": "o1", "session_key": "tiihtNczf5v6AKRyjwEUhQ=="}', "tiihtN", '"session_key": "***"'),
        ('{"access_token": "ACCESS", "refresh_token": "REFRESH"}', "ACCESS", '"access_token": "***"'),
        ("Authorization: Bearer zb_0123456789abcdef_c2VjcmV0c2VjcmV0", "c2VjcmV0", "Bearer ***"),
        ("key zb_0123456789abcdef_c2VjcmV0c2VjcmV0 revoked", "c2VjcmV0", "zb_0123456789abcdef_***"),
        ("endpoint secret whsec_AbCdEf0123", "AbCdEf0123", "whsec_***"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----", "MIIEvQIBADANBg", "[private key"),
    ],
)
def test_redact(line: str, secret: str, kept: str) -> None:
    cleaned = redact(line)
    assert secret not in cleaned and kept in cleaned


def test_error_codes_and_plain_lines_are_left_alone() -> None:
    for line in (
        '{"code": "ORDERPAID", "message": "该订单已支付"}',
        "order A1001 PAID, 1000 fen",
        "GET /v1/orders?limit=2",
    ):
        assert redact(line) == line


def test_every_log_line_is_redacted_whatever_logger_wrote_it() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("httpx.test-redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("GET %s", "https://api.weixin.qq.com/sns/jscode2session?appid=wx1&secret=TOPSECRET")
        try:
            raise ValueError('{"session_key": "SESSIONKEY"}')
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "TOPSECRET" not in written and "SESSIONKEY" not in written and "secret=***" in written
