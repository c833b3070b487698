"""One small hierarchy for everything WeChat Pay can answer, so callers catch by meaning.

Codes are compared the way they must be: WeChat's docs spell them both
``SYSTEM_ERROR`` and ``SYSTEMERROR``, ``NO_AUTH`` and ``NOAUTH`` (docs/wechatpay-protocol.md §4.6).
"""

from __future__ import annotations


def normalise_code(code: str) -> str:
    return code.replace("_", "").upper()


class WechatPayError(Exception):
    """Root: anything that went wrong talking to WeChat Pay."""

    def __init__(self, message: str, *, code: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    def is_code(self, *codes: str) -> bool:
        return normalise_code(self.code) in {normalise_code(c) for c in codes}


class SignatureError(WechatPayError):
    """A signature, timestamp, key or ciphertext that does not check out."""


class WechatPayBusinessError(WechatPayError):
    """WeChat refused the request for a reason retrying will not change (4xx)."""


class WechatPayNotFound(WechatPayBusinessError):
    """``ORDER_NOT_EXIST`` / ``RESOURCE_NOT_EXISTS``."""


class WechatPayRateLimited(WechatPayError):
    """429 ``FREQUENCY_LIMITED``: back off and retry."""


class WechatPayUnavailable(WechatPayError):
    """5xx, a timeout or a connection failure: retry with identical parameters."""


class MerchantConfigError(Exception):
    """A merchant setting that cannot work; names the setting and the file, never a secret."""
