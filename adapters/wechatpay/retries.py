"""The one retry rule for both WeChat Pay clients (docs/wechatpay-protocol.md §4.6, §6.2).

Only what WeChat says may be retried is: unavailable (5xx, timeouts, a
refused connection, ``SYSTEMERROR``, ``BIZERR_NEED_RETRY``) and rate-limited
(``FREQUENCY_LIMITED``) — with the same request content (the same
``out_trade_no`` / ``out_refund_no``), a bounded number of times, with
exponential backoff and jitter.  Everything else is raised at once.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from adapters.wechatpay.errors import WechatPayError, WechatPayRateLimited, WechatPayUnavailable

T = TypeVar("T")


CallListener = Callable[[str, str, float], None]  # (endpoint, code, seconds) of one attempt


@dataclass
class CallStats:
    """WeChat calls by outcome code, for tests that count attempts; listeners (metrics) get each attempt.

    Seed 000 asks for unifiedorder's and refund's failure rates: every attempt
    is reported with its endpoint (``endpoint_of``), WeChat's answer code (or
    the HTTP status of a success) and how long it took.
    """

    by_code: dict[str, int] = field(default_factory=dict)
    listeners: list[CallListener] = field(default_factory=list)

    def count(self, code: str, endpoint: str = "other", seconds: float = 0.0) -> None:
        self.by_code[code] = self.by_code.get(code, 0) + 1
        for listener in self.listeners:
            listener(endpoint, code, seconds)


# v3 paths (https://pay.weixin.qq.com/doc/v3/merchant/4012791897 …) and v2 paths
# (https://pay.weixin.qq.com/wiki/doc/api/native.php?chapter=9_1 …), each to the business step it is
_ENDPOINTS = (
    (re.compile(r"/v3/pay/(partner/)?transactions/(native|jsapi|app|h5)$"), "prepay"),
    (re.compile(r"/close$"), "close"),
    (re.compile(r"/v3/pay/(partner/)?transactions/(out-trade-no|id)/"), "query"),
    (re.compile(r"/v3/refund/domestic/refunds$|/apply-abnormal-refund$"), "refund"),
    (re.compile(r"/v3/refund/domestic/refunds/"), "refund_query"),
    (re.compile(r"/v3/bill/|/billdownload/|/pay/downloadbill$|/pay/downloadfundflow$"), "bill"),
    (re.compile(r"/v3/certificates$"), "certificates"),
    (re.compile(r"/pay/unifiedorder$"), "prepay"),
    (re.compile(r"/pay/orderquery$"), "query"),
    (re.compile(r"/pay/closeorder$"), "close"),
    (re.compile(r"/secapi/pay/refund$"), "refund"),
    (re.compile(r"/pay/refundquery$"), "refund_query"),
)


def endpoint_of(url: str) -> str:
    """``prepay``, ``query``, ``close``, ``refund``, ``refund_query``, ``bill``, ``certificates`` or ``other``."""
    path = urlsplit(url).path
    for pattern, name in _ENDPOINTS:
        if pattern.search(path):
            return name
    return "other"


@dataclass
class Retry:
    max_attempts: int
    backoff_seconds: float
    sleep: Callable[[float], None]
    stats: CallStats
    never: tuple[str, ...] = ()  # codes that look retryable but are not (v3's OPENID_MISMATCH…)

    def run(self, attempt: Callable[[], T], success_code: Callable[[T], str], endpoint: str = "other") -> T:
        for number in range(1, self.max_attempts + 1):
            started = time.monotonic()
            try:
                result = attempt()
            except (WechatPayUnavailable, WechatPayRateLimited) as error:
                self.stats.count(error.code or "UNAVAILABLE", endpoint, time.monotonic() - started)
                if number == self.max_attempts or error.is_code(*self.never):
                    raise
                self.sleep(self.backoff_seconds * 2 ** (number - 1) * random.uniform(0.8, 1.2))  # noqa: S311 — jitter
                continue
            except WechatPayError as error:
                self.stats.count(error.code or type(error).__name__, endpoint, time.monotonic() - started)
                raise
            self.stats.count(success_code(result), endpoint, time.monotonic() - started)
            return result
        raise AssertionError("unreachable")
