"""The one retry rule for both WeChat Pay clients (docs/wechatpay-protocol.md §4.6, §6.2).

Only what WeChat says may be retried is: unavailable (5xx, timeouts, a
refused connection, ``SYSTEMERROR``, ``BIZERR_NEED_RETRY``) and rate-limited
(``FREQUENCY_LIMITED``) — with the same request content (the same
``out_trade_no`` / ``out_refund_no``), a bounded number of times, with
exponential backoff and jitter.  Everything else is raised at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from adapters.wechatpay.errors import WechatPayError, WechatPayRateLimited, WechatPayUnavailable

T = TypeVar("T")


@dataclass
class CallStats:
    """WeChat calls by outcome code, for metrics and for tests that count attempts."""

    by_code: dict[str, int] = field(default_factory=dict)

    def count(self, code: str) -> None:
        self.by_code[code] = self.by_code.get(code, 0) + 1


@dataclass
class Retry:
    max_attempts: int
    backoff_seconds: float
    sleep: Callable[[float], None]
    stats: CallStats
    never: tuple[str, ...] = ()  # codes that look retryable but are not (v3's OPENID_MISMATCH…)

    def run(self, attempt: Callable[[], T], success_code: Callable[[T], str]) -> T:
        for number in range(1, self.max_attempts + 1):
            try:
                result = attempt()
            except (WechatPayUnavailable, WechatPayRateLimited) as error:
                self.stats.count(error.code or "UNAVAILABLE")
                if number == self.max_attempts or error.is_code(*self.never):
                    raise
                self.sleep(self.backoff_seconds * 2 ** (number - 1) * random.uniform(0.8, 1.2))  # noqa: S311 — jitter
                continue
            except WechatPayError as error:
                self.stats.count(error.code or type(error).__name__)
                raise
            self.stats.count(success_code(result))
            return result
        raise AssertionError("unreachable")
