"""WeChat Pay's error answers: an HTTP status and ``{"code","message","detail"?}`` (docs/wechatpay-protocol.md §4.6)."""

from __future__ import annotations

from typing import Any


class WechatError(Exception):
    def __init__(self, status: int, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


def param_error(field: str, message: str, value: Any = None, location: str = "body") -> WechatError:
    detail: dict[str, Any] = {"field": field, "location": location}
    if value is not None:
        detail["value"] = value
    return WechatError(400, "PARAM_ERROR", message, detail)


# The codes of docs/wechatpay-protocol.md §4.6 that faults may inject, with the status WeChat answers them with.
FAULT_STATUS = {
    "SYSTEM_ERROR": (500, "系统繁忙,请稍后重试"),
    "SYSTEMERROR": (500, "系统繁忙,请稍后重试"),
    "BANK_ERROR": (500, "银行系统异常"),
    "FREQUENCY_LIMITED": (429, "频率超限"),
    "NOT_ENOUGH": (403, "基本账户余额不足"),
    "NO_AUTH": (403, "商户无权限"),
    "TRADE_ERROR": (403, "交易错误"),
    "RULE_LIMIT": (403, "业务规则限制"),
    "PARAM_ERROR": (400, "参数错误"),
    "INVALID_REQUEST": (400, "无效请求"),
    "SIGN_ERROR": (401, "签名错误,请检查后再试"),
    "ORDER_NOT_EXIST": (404, "订单不存在"),  # e.g. a close that reaches WeChat before the order it closes is visible
}
