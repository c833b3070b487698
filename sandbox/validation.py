"""WeChat's parameter rules for the requests the sandbox accepts (docs/wechatpay-protocol.md §4.2, §4.5)."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sandbox.errors import param_error

OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2}|Z)")


def require_str(body: dict[str, Any], field: str, max_len: int, *, path: str = "") -> str:
    value = body.get(field)
    name = f"{path}{field}"
    if not isinstance(value, str) or not value:
        raise param_error(name, f"输入源“/body/{name}”映射到字段“{name}”必填性规则校验失败，此字段为必填项")
    if len(value) > max_len:
        raise param_error(
            name,
            f"输入源“/body/{name}”映射到字段“{name}”字符串规则校验失败，字节数 {len(value)}，大于最大值 {max_len}",
            value,
        )
    return value


def check_out_trade_no(value: Any) -> str:
    if not isinstance(value, str) or not OUT_TRADE_NO.fullmatch(value):
        raise param_error(
            "out_trade_no",
            "输入源“/body/out_trade_no”映射到字段“商户订单号”字符串规则校验失败，长度6-32，只能是数字、大小写字母_-|*",
            value,
        )
    return value


def check_out_refund_no(value: Any) -> str:
    if not isinstance(value, str) or not OUT_REFUND_NO.fullmatch(value):
        raise param_error(
            "out_refund_no",
            "输入源“/body/out_refund_no”映射到字段“商户退款单号”字符串规则校验失败，"
            "长度1-64，只能是数字、大小写字母_-|*@",
            value,
        )
    return value


def check_time_expire(value: Any) -> datetime | None:
    """RFC3339 with an offset; ``20220421191948`` gets WeChat's exact refusal (docs/wechatpay-protocol.md §4.2)."""
    if value is None:
        return None
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        error = param_error(
            "time_expire",
            "输入源“/body/time_expire”映射到值字段“交易结束时间”字符串规则校验失败，"
            "字符串必须是符合 RFC3339 日期时间格式",
        )
        error.detail = {"location": "body", "value": value}
        raise error
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def check_notify_url(value: Any) -> str:
    """https, or http to a loopback host (the sandbox's one allowance); never a query string."""
    if not isinstance(value, str) or not value or len(value) > 255:
        raise param_error("notify_url", "notify_url 必填，且长度不超过255", value)
    parts = urlsplit(value)
    loopback = False
    try:
        loopback = parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise param_error("notify_url", "notify_url 必须以https://开头", value)
    if parts.query or parts.fragment:
        raise param_error("notify_url", "notify_url 不能携带参数", value)
    return value


def check_amount(amount: Any, field: str) -> int:
    """A positive integer number of fen; a float, a string or a bool is refused."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise param_error(field, f"输入源“/body/{field}”映射到值字段“金额”必须是正整数", amount)
    return amount
