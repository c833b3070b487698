"""API v2's messages as WeChat Pay writes them, over the sandbox's one transaction and refund model.

A v2 ``unifiedorder`` is checked here and stored as the same transaction a
v3 prepay makes (so ``/sandbox/pay``, expiry, bills and refunds work for
both); the answers, notifications and ``_$n`` refund lists are written in
v2's field names (docs/wechatpay-protocol.md §6.2–§6.4).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from adapters.wechatpay.beijing import BEIJING, compact
from sandbox.clock import rfc3339
from sandbox.config import SandboxMerchant
from sandbox.errors import WechatError
from sandbox.refunds import shares_of
from sandbox.transactions import (
    DEFAULT_EXPIRY,
    STATE_DESC,
    coupon_fen,
    coupon_type,
    nocash_fen,
    paid_total,
    settlement_total,
)
from sandbox.validation import check_notify_url

TRADE_TYPES = {"JSAPI": "jsapi", "NATIVE": "native", "APP": "app", "MWEB": "h5"}
REFUND_STATUS = {"PROCESSING": "PROCESSING", "SUCCESS": "SUCCESS", "CLOSED": "REFUNDCLOSE", "ABNORMAL": "CHANGE"}
# The v3 model's error codes in v2's spelling (docs/wechatpay-protocol.md §6.2, "Error codes by API").
ERR_CODES = {
    "ORDER_CLOSED": "ORDERCLOSED",
    "ORDER_NOT_EXIST": "ORDERNOTEXIST",
    "RESOURCE_NOT_EXISTS": "ORDERNOTEXIST",
    "MCH_NOT_EXISTS": "MCHID_NOT_EXIST",
    "NOT_ENOUGH": "NOTENOUGH",
    "SYSTEM_ERROR": "SYSTEMERROR",
    "INVALID_REQUEST": "ERROR",
}


class V2Failure(Exception):
    """A business failure: ``result_code=FAIL`` with ``err_code`` and ``err_code_des``."""

    def __init__(self, err_code: str, err_code_des: str) -> None:
        super().__init__(f"{err_code}: {err_code_des}")
        self.err_code = err_code
        self.err_code_des = err_code_des


def require(params: dict[str, str], *names: str) -> None:
    for name in names:
        if not params.get(name):
            raise V2Failure("LACK_PARAMS", f"缺少参数{name}")


def fen(params: dict[str, str], name: str) -> int:
    value = params.get(name, "")
    if not value.isdigit() or int(value) <= 0:
        raise V2Failure("PARAM_ERROR", f"{name}必须为正整数（单位：分）")
    return int(value)


def unifiedorder_fields(merchant: SandboxMerchant, params: dict[str, str], now: datetime) -> tuple[dict[str, Any], str]:
    """A ``unifiedorder`` request checked and read as the sandbox's transaction fields; with the channel."""
    require(params, "body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url", "trade_type")
    trade_type = params["trade_type"]
    if trade_type not in TRADE_TYPES:
        raise V2Failure("PARAM_ERROR", "trade_type 只支持 JSAPI、NATIVE、APP、MWEB")
    partner = bool(params.get("sub_mch_id"))
    sub_mchid, sub_appid = params.get("sub_mch_id", ""), params.get("sub_appid", "")
    if partner:
        if sub_mchid not in merchant.sub_merchants:
            raise V2Failure("MCHID_NOT_EXIST", "特约商户号不存在或未与服务商建立关系")
        if sub_appid and sub_appid not in merchant.sub_merchants[sub_mchid]:
            raise V2Failure("APPID_MCHID_NOT_MATCH", "sub_appid和sub_mch_id不匹配")
    openid_field, openid = "", ""
    if trade_type == "JSAPI":
        if params.get("sub_openid"):
            if not sub_appid:
                raise V2Failure("PARAM_ERROR", "传了sub_openid时sub_appid必填")
            openid_field, openid = "sub_openid", params["sub_openid"]
        elif params.get("openid"):
            openid_field, openid = "openid", params["openid"]
        else:
            raise V2Failure("LACK_PARAMS", "JSAPI支付必须传openid")
    elif params.get("openid"):
        openid_field, openid = "openid", params["openid"]  # Native mode 1 names the payer who scanned
    if trade_type == "NATIVE":
        require(params, "product_id")
    if trade_type == "MWEB":
        require(params, "scene_info")
        try:
            json.loads(params["scene_info"])
        except ValueError:
            raise V2Failure("PARAM_ERROR", "scene_info必须是JSON字符串") from None
    if len(params["body"].encode()) > 128:
        raise V2Failure("PARAM_ERROR", "body长度不能超过128字节")
    try:
        check_notify_url(params["notify_url"])
    except WechatError as exc:
        raise V2Failure("PARAM_ERROR", exc.message) from None
    expire = now + DEFAULT_EXPIRY
    if params.get("time_expire"):
        try:
            expire = datetime.strptime(params["time_expire"], "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)
        except ValueError:
            raise V2Failure("PARAM_ERROR", "time_expire格式应为yyyyMMddHHmmss") from None
        expire = max(expire, now + timedelta(minutes=1))  # WeChat's minimum is one minute
    fields = {
        "api": "v2",
        "sign_type": params.get("sign_type") or "MD5",
        "mchid": merchant.mchid,
        "partner": partner,
        "appid": params["appid"],
        "sub_mchid": sub_mchid,
        "sub_appid": sub_appid,
        "trade_type": trade_type,
        "out_trade_no": params["out_trade_no"],
        "description": params["body"],
        "attach": params.get("attach", ""),
        "notify_url": params["notify_url"],
        "time_expire": rfc3339(expire),
        "total": fen(params, "total_fee"),
        "openid_field": openid_field,
        "openid": openid,
        "product_id": params.get("product_id", ""),
        "payer_client_ip": params["spbill_create_ip"],
    }
    return fields, TRADE_TYPES[trade_type]


def ids(txn: dict[str, Any]) -> dict[str, str]:
    out = {"appid": txn["appid"], "mch_id": txn["mchid"]}
    if txn["partner"]:
        out["sub_mch_id"] = txn["sub_mchid"]
        if txn["sub_appid"]:
            out["sub_appid"] = txn["sub_appid"]
    return out


def prepay_answer(txn: dict[str, Any]) -> dict[str, str]:
    answer = {"trade_type": txn["trade_type"], "prepay_id": txn["prepay_id"]}
    if txn["trade_type"] == "NATIVE":
        answer["code_url"] = txn["code_url"]
    if txn["trade_type"] == "MWEB":
        answer["mweb_url"] = txn["h5_url"]
    return answer


def paid_fields(txn: dict[str, Any]) -> dict[str, str]:
    """What a paid transaction says in a pay notification and an ``orderquery`` answer.

    A payer who paid less than the total used a coupon: ``coupon_fee`` and
    the ``_$n`` coupon fields appear, and ``cash_fee`` is what they paid.
    """
    fields = {
        "openid": txn["openid"] if txn["openid_field"] != "sub_openid" else "",
        "is_subscribe": "N",
        "trade_type": txn["trade_type"],
        "bank_type": "OTHERS",
        "total_fee": str(paid_total(txn)),
        "fee_type": "CNY",
        "cash_fee": str(txn["payer_total"]),
        "transaction_id": txn["transaction_id"],
        "out_trade_no": txn["out_trade_no"],
        "attach": txn["attach"],
        "time_end": compact(datetime.fromisoformat(txn["success_time"])),
    }
    if txn["openid_field"] == "sub_openid":
        fields |= {"sub_openid": txn["openid"], "sub_is_subscribe": "N"}
    coupon = coupon_fen(txn)
    if coupon > 0:
        fields |= {
            "coupon_fee": str(coupon),
            "coupon_count": "1",
            "coupon_type_0": "NO_CASH" if coupon_type(txn) == "NOCASH" else "CASH",
            "coupon_id_0": f"1000{txn['transaction_id'][-10:]}",
            "coupon_fee_0": str(coupon),
        }
    if nocash_fen(txn):  # 应结订单金额, sent when a 免充值券 was used
        fields["settlement_total_fee"] = str(settlement_total(txn))
    return {k: v for k, v in fields.items() if v != ""}


def orderquery_answer(txn: dict[str, Any]) -> dict[str, str]:
    answer = {
        "out_trade_no": txn["out_trade_no"],
        "trade_state": txn["state"],
        "trade_state_desc": STATE_DESC[txn["state"]],
    }
    if txn["state"] in ("SUCCESS", "REFUND"):
        answer |= paid_fields(txn)
    return answer


def pay_notification(txn: dict[str, Any]) -> dict[str, str]:
    return ids(txn) | {"return_code": "SUCCESS", "result_code": "SUCCESS"} | paid_fields(txn)


def refund_answer(refund: dict[str, Any]) -> dict[str, str]:
    return {
        "transaction_id": refund["transaction_id"],
        "out_trade_no": refund["out_trade_no"],
        "out_refund_no": refund["out_refund_no"],
        "refund_id": refund["refund_id"],
        "refund_fee": str(refund["refund"]),
        "settlement_refund_fee": str(shares_of(refund)["settlement_refund"]),
        "total_fee": str(refund["total"]),
        "settlement_total_fee": str(shares_of(refund)["settlement_total"]),
        "cash_fee": str(refund["payer_total"]),
        "cash_refund_fee": str(shares_of(refund)["payer_refund"]),
        "coupon_refund_fee": str(shares_of(refund)["discount_refund"]),
        "refund_channel": "",
    }


def _beijing_seconds(rfc: str) -> str:
    return datetime.fromisoformat(rfc).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def refundquery_answer(txn: dict[str, Any], refunds: list[dict[str, Any]]) -> dict[str, str]:
    """Every refund of the transaction as ``_$n`` fields, oldest first."""
    answer = {
        "transaction_id": txn["transaction_id"],
        "out_trade_no": txn["out_trade_no"],
        "total_fee": str(paid_total(txn)),
        "cash_fee": str(txn["payer_total"]),
        "refund_count": str(len(refunds)),
        "refund_fee": str(sum(r["refund"] for r in refunds)),
    }
    for n, refund in enumerate(refunds):
        answer |= {
            f"out_refund_no_{n}": refund["out_refund_no"],
            f"refund_id_{n}": refund["refund_id"],
            f"refund_channel_{n}": "ORIGINAL",
            f"refund_fee_{n}": str(refund["refund"]),
            f"settlement_refund_fee_{n}": str(shares_of(refund)["settlement_refund"]),
            f"refund_status_{n}": REFUND_STATUS[refund["status"]],
            f"refund_account_{n}": "REFUND_SOURCE_UNSETTLED_FUNDS",
            f"refund_recv_accout_{n}": refund.get("user_received_account", "支付用户零钱"),
        }
        if refund.get("success_time"):
            answer[f"refund_success_time_{n}"] = _beijing_seconds(refund["success_time"])
    return answer


def refund_notice(refund: dict[str, Any]) -> dict[str, str]:
    """The plaintext of ``req_info`` (docs/wechatpay-protocol.md §6.4), in WeChat's field order."""
    notice = {
        "out_refund_no": refund["out_refund_no"],
        "out_trade_no": refund["out_trade_no"],
        "refund_account": "REFUND_SOURCE_UNSETTLED_FUNDS",
        "refund_fee": str(refund["refund"]),
        "refund_id": refund["refund_id"],
        "refund_recv_accout": refund.get("user_received_account", "支付用户零钱"),
        "refund_request_source": "API",
        "refund_status": REFUND_STATUS[refund["status"]],
        "settlement_refund_fee": str(shares_of(refund)["settlement_refund"]),
        "settlement_total_fee": str(shares_of(refund)["settlement_total"]),
        "success_time": _beijing_seconds(refund["success_time"]) if refund.get("success_time") else "",
        "total_fee": str(refund["total"]),
        "transaction_id": refund["transaction_id"],
    }
    return {k: v for k, v in notice.items() if v != ""}
