"""Payments as WeChat Pay keeps them: prepay, pay, query, close (docs/wechatpay-protocol.md §4.1–§4.4, §4.3)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sandbox.clock import BEIJING, SandboxClock, rfc3339
from sandbox.config import SandboxConfig, SandboxMerchant
from sandbox.errors import WechatError, param_error
from sandbox.store import SandboxStore
from sandbox.validation import (
    check_amount,
    check_notify_url,
    check_out_trade_no,
    check_time_expire,
    require_str,
)

TRADE_TYPES = {"jsapi": "JSAPI", "native": "NATIVE", "app": "APP", "h5": "MWEB"}
STATE_DESC = {
    "NOTPAY": "订单未支付",
    "SUCCESS": "支付成功",
    "CLOSED": "订单已关闭",
    "REFUND": "订单发生过退款",
    "PAYERROR": "支付失败，请重新下单支付",
}
# Without time_expire an unpaid order can be paid for 7 days (docs/wechatpay-protocol.md §4.2).
DEFAULT_EXPIRY = timedelta(days=7)


def transaction_key(mchid: str, sub_mchid: str, out_trade_no: str) -> str:
    return f"{mchid}|{sub_mchid}|{out_trade_no}"


class Transactions:
    def __init__(self, config: SandboxConfig, store: SandboxStore, clock: SandboxClock) -> None:
        self.config = config
        self.store = store
        self.clock = clock

    # -- prepay ------------------------------------------------------------------

    def prepay(self, merchant: SandboxMerchant, channel: str, partner: bool, body: dict[str, Any]) -> dict[str, str]:
        fields = self._check_prepay(merchant, channel, partner, body)
        return _prepay_answer(self.open(fields, body, channel))

    def open(self, fields: dict[str, Any], request: dict[str, Any], channel: str) -> dict[str, Any]:
        """Store a checked prepay (v3 or v2), or answer an identical repeat with the same prepay."""
        key = transaction_key(fields["mchid"], fields["sub_mchid"], fields["out_trade_no"])
        with self.store.transaction():
            existing = self.store.get("transaction", key)
            if existing is not None:
                self._re_prepay(existing, request)
                return existing
            now = self.clock.now()
            txn = fields | {
                "key": key,
                "request": request,
                "state": "NOTPAY",
                "created_at": rfc3339(now),
                "refunded_fen": 0,
            }
            txn |= self._prepay_result(channel, now)
            self.store.put("transaction", key, txn)
            if txn.get("code_url"):
                self.store.alias("transaction", txn["code_url"], key)
            if txn.get("prepay_id"):
                self.store.alias("transaction", f"prepay:{txn['prepay_id']}", key)
            self.store.alias("transaction", f"otn:{fields['out_trade_no']}", key)
        return txn

    @staticmethod
    def _re_prepay(existing: dict[str, Any], body: dict[str, Any]) -> None:
        """Identical parameters get a usable prepay again ("参数重入"); different ones do not."""
        if existing["state"] in ("SUCCESS", "REFUND"):
            raise WechatError(403, "ORDERPAID", "该订单已支付")
        if existing["state"] == "CLOSED":
            raise WechatError(400, "ORDER_CLOSED", "订单已关闭")
        if existing["request"] != body:
            raise WechatError(403, "OUT_TRADE_NO_USED", "商户订单号重复")

    def _prepay_result(self, channel: str, now: datetime) -> dict[str, str]:
        prepay_id = "wx" + now.astimezone(BEIJING).strftime("%d%H%M%S") + secrets.token_hex(13)
        if channel == "native":
            # v2 answers a prepay_id beside the code_url (mode 1 pays by it); v3 shows only the code_url
            return {"code_url": "weixin://wxpay/bizpayurl?pr=" + secrets.token_urlsafe(7)[:9], "prepay_id": prepay_id}
        if channel == "h5":
            return {
                "prepay_id": prepay_id,
                "h5_url": f"https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={prepay_id}"
                f"&package={secrets.randbelow(10**10)}",
            }
        return {"prepay_id": prepay_id}

    def _check_prepay(
        self, merchant: SandboxMerchant, channel: str, partner: bool, body: dict[str, Any]
    ) -> dict[str, Any]:
        if partner:
            if body.get("sp_mchid") != merchant.mchid:
                raise param_error("sp_mchid", "sp_mchid 与请求签名的商户号不一致", body.get("sp_mchid"))
            appid = require_str(body, "sp_appid", 32)
            sub_mchid = require_str(body, "sub_mchid", 32)
            if sub_mchid not in merchant.sub_merchants:
                raise WechatError(400, "MCH_NOT_EXISTS", "特约商户号不存在或未与服务商建立关系")
            sub_appid = body.get("sub_appid") or ""
            if sub_appid and sub_appid not in merchant.sub_merchants[sub_mchid]:
                raise WechatError(400, "APPID_MCHID_NOT_MATCH", "sub_appid和sub_mchid不匹配")
        else:
            if body.get("mchid") != merchant.mchid:
                raise param_error("mchid", "mchid 与请求签名的商户号不一致", body.get("mchid"))
            appid = require_str(body, "appid", 32)
            sub_mchid, sub_appid = "", ""
        if appid not in merchant.appids:
            raise WechatError(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
        description = require_str(body, "description", 127)
        out_trade_no = check_out_trade_no(body.get("out_trade_no"))
        time_expire = check_time_expire(body.get("time_expire"))
        notify_url = check_notify_url(body.get("notify_url"))
        amount = body.get("amount")
        if not isinstance(amount, dict):
            raise param_error("amount", "输入源“/body/amount”映射到字段“订单金额”必填性规则校验失败，此字段为必填项")
        total = check_amount(amount.get("total"), "amount/total")
        if amount.get("currency", "CNY") != "CNY":
            raise param_error("amount/currency", "currency 只支持 CNY", amount.get("currency"))
        attach = body.get("attach", "")
        if not isinstance(attach, str) or len(attach) > 128:
            raise param_error("attach", "attach 长度不超过128", attach)
        openid_field, openid = self._check_payer(channel, partner, body)
        if channel == "h5":
            scene = body.get("scene_info") or {}
            if (
                not isinstance(scene, dict)
                or not scene.get("payer_client_ip")
                or not isinstance(scene.get("h5_info"), dict)
                or not scene["h5_info"].get("type")
            ):
                raise param_error("scene_info", "H5支付必须传 scene_info.payer_client_ip 和 scene_info.h5_info.type")
        now = self.clock.now()
        # WeChat moves an expiry earlier than one minute from now to one minute from now.
        expire = max(time_expire, now + timedelta(minutes=1)) if time_expire else now + DEFAULT_EXPIRY
        return {
            "mchid": merchant.mchid,
            "partner": partner,
            "appid": appid,
            "sub_mchid": sub_mchid,
            "sub_appid": sub_appid,
            "trade_type": TRADE_TYPES[channel],
            "out_trade_no": out_trade_no,
            "description": description,
            "attach": attach,
            "notify_url": notify_url,
            "time_expire": rfc3339(expire),
            "total": total,
            "openid_field": openid_field,
            "openid": openid,
            # what WeChat's risk checks see of the payer (H5 requires it)
            "payer_client_ip": str((body.get("scene_info") or {}).get("payer_client_ip") or ""),
        }

    @staticmethod
    def _check_payer(channel: str, partner: bool, body: dict[str, Any]) -> tuple[str, str]:
        if channel != "jsapi":
            return "", ""
        payer = body.get("payer")
        if not isinstance(payer, dict):
            raise param_error("payer", "输入源“/body/payer”映射到字段“支付者”必填性规则校验失败，此字段为必填项")
        fields = ("sp_openid", "sub_openid") if partner else ("openid",)
        for field in fields:
            if isinstance(payer.get(field), str) and payer[field]:
                if field == "sub_openid" and not body.get("sub_appid"):
                    raise param_error("sub_appid", "传了 sub_openid 时 sub_appid 必填")
                return field, payer[field]
        raise param_error(f"payer/{fields[0]}", f"输入源“/body/payer/{fields[0]}”必填性规则校验失败，此字段为必填项")

    # -- reading -------------------------------------------------------------------

    def find(self, merchant: SandboxMerchant, sub_mchid: str, out_trade_no: str) -> dict[str, Any]:
        txn = self.store.get("transaction", transaction_key(merchant.mchid, sub_mchid, out_trade_no))
        if txn is None:
            raise WechatError(404, "ORDER_NOT_EXIST", "订单不存在")
        return txn

    def find_by_id(self, merchant: SandboxMerchant, sub_mchid: str, transaction_id: str) -> dict[str, Any]:
        """By ``transaction_id``: only a paid order has one (docs/wechatpay-protocol.md §4.1)."""
        txn = self.store.by_alias("transaction", f"txn:{transaction_id}")
        if txn is None or txn["mchid"] != merchant.mchid or txn["sub_mchid"] != sub_mchid:
            raise WechatError(404, "ORDER_NOT_EXIST", "订单不存在")
        return txn

    def find_for_payer(
        self, out_trade_no: str | None, code_url: str | None, prepay_id: str | None = None
    ) -> dict[str, Any]:
        txn = None
        if prepay_id:
            txn = self.store.by_alias("transaction", f"prepay:{prepay_id}")
        elif code_url:
            txn = self.store.by_alias("transaction", code_url)
        elif out_trade_no:
            txn = self.store.by_alias("transaction", f"otn:{out_trade_no}")
        if txn is None:
            raise WechatError(404, "ORDER_NOT_EXIST", "订单不存在")
        return txn

    # -- changes -------------------------------------------------------------------

    def close(self, merchant: SandboxMerchant, sub_mchid: str, out_trade_no: str) -> None:
        with self.store.transaction():
            txn = self.find(merchant, sub_mchid, out_trade_no)
            if txn["state"] in ("SUCCESS", "REFUND"):
                raise WechatError(403, "ORDERPAID", "订单已支付")
            if txn["state"] == "CLOSED":
                raise WechatError(400, "ORDER_CLOSED", "订单已关闭")
            txn["state"] = "CLOSED"
            self.store.put("transaction", txn["key"], txn)

    def pay(
        self,
        txn_key: str,
        result: str,
        openid: str,
        payer_total: int | None,
        total_override: int | None,
        late: bool,
        coupon: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The payer pays (or fails to).  Returns the updated transaction."""
        with self.store.transaction():
            txn = self.store.get("transaction", txn_key)
            assert txn is not None
            if txn["state"] in ("SUCCESS", "REFUND"):
                raise WechatError(409, "ORDERPAID", "该订单已支付")
            if txn["state"] == "CLOSED":
                raise WechatError(409, "ORDER_CLOSED", "订单已关闭")
            now = self.clock.now()
            if not late and now > datetime.fromisoformat(txn["time_expire"]):
                raise WechatError(409, "ORDER_EXPIRED", '订单已过期 (pass "late": true to pay anyway)')
            if result == "PAYERROR":
                txn["state"] = "PAYERROR"
            else:
                txn["state"] = "SUCCESS"
                txn["transaction_id"] = (
                    "42" + now.astimezone(BEIJING).strftime("%Y%m%d") + f"{secrets.randbelow(10**18):018d}"
                )
                txn["success_time"] = rfc3339(now)
                txn["reported_total"] = total_override if total_override is not None else txn["total"]
                if coupon is not None:  # the payer pays what the coupon leaves
                    if coupon["amount_fen"] > txn["reported_total"]:
                        raise WechatError(400, "PARAM_ERROR", "代金券金额超过订单金额")
                    txn["coupon_type"] = coupon["type"]
                    txn["payer_total"] = txn["reported_total"] - coupon["amount_fen"]
                else:
                    txn["payer_total"] = payer_total if payer_total is not None else txn["reported_total"]
                if not txn["openid"]:
                    txn["openid"] = openid
                    txn["openid_field"] = "sp_openid" if txn["partner"] else "openid"
                self.store.alias("transaction", f"txn:{txn['transaction_id']}", txn["key"])
            self.store.put("transaction", txn["key"], txn)
        return txn


def paid_total(txn: dict[str, Any]) -> int:
    """The transaction's total at WeChat: what it reports everywhere once paid (query, notification, bill,
    refund limits) — the prepay's total unless the payment said otherwise (``/sandbox/pay``'s ``total_fen``)."""
    return int(txn.get("reported_total", txn["total"]))


# Coupons (代金券): a 充值券 (CASH) was funded in advance and WeChat settles it with the payer's share; a
# 免充值券 (NOCASH, v2 NO_CASH) is the merchant's own discount: 应结订单金额 = 订单金额 − 免充值券.
# https://pay.weixin.qq.com/doc/v3/merchant/4012791869, https://pay.weixin.qq.com/wiki/doc/api/tools/sp_coupon.php
COUPON_TYPES = ("CASH", "NOCASH")


def coupon_fen(txn: dict[str, Any]) -> int:
    """What coupons paid: the total less what the payer paid."""
    return paid_total(txn) - int(txn.get("payer_total", paid_total(txn)))


def coupon_type(txn: dict[str, Any]) -> str:
    return str(txn.get("coupon_type") or "CASH")  # a payer_total_fen without a coupon kind: a 充值券


def nocash_fen(txn: dict[str, Any]) -> int:
    return coupon_fen(txn) if coupon_type(txn) == "NOCASH" else 0


def settlement_total(txn: dict[str, Any]) -> int:
    """应结订单金额: what WeChat settles to the merchant for the transaction."""
    return paid_total(txn) - nocash_fen(txn)


def promotion_detail(txn: dict[str, Any]) -> list[dict[str, Any]]:
    """The coupon as v3's ``promotion_detail[]`` (docs/wechatpay-protocol.md §3.3); none without one."""
    coupon = coupon_fen(txn)
    if coupon <= 0:
        return []
    return [
        {
            "coupon_id": f"1000{txn['transaction_id'][-10:]}",
            "name": "免充值代金券" if coupon_type(txn) == "NOCASH" else "充值代金券",
            "scope": "GLOBAL",
            "type": coupon_type(txn),
            "amount": coupon,
            "stock_id": "8888888",
            "wechatpay_contribute": 0,
            "merchant_contribute": coupon,
            "other_contribute": 0,
            "currency": "CNY",
        }
    ]


def _prepay_answer(txn: dict[str, Any]) -> dict[str, str]:
    if txn["trade_type"] == "NATIVE":
        return {"code_url": txn["code_url"]}
    if txn["trade_type"] == "MWEB":
        return {"h5_url": txn["h5_url"]}
    return {"prepay_id": txn["prepay_id"]}


def transaction_json(txn: dict[str, Any]) -> dict[str, Any]:
    """The Transaction object of queries and notifications (docs/wechatpay-protocol.md §3.3, §4.3)."""
    ids: dict[str, Any]
    if txn["partner"]:
        ids = {"sp_appid": txn["appid"], "sp_mchid": txn["mchid"], "sub_mchid": txn["sub_mchid"]}
        if txn["sub_appid"]:
            ids["sub_appid"] = txn["sub_appid"]
    else:
        ids = {"appid": txn["appid"], "mchid": txn["mchid"]}
    body: dict[str, Any] = ids | {
        "out_trade_no": txn["out_trade_no"],
        "trade_type": txn["trade_type"],
        "trade_state": txn["state"],
        "trade_state_desc": STATE_DESC[txn["state"]],
        "attach": txn["attach"],
    }
    if txn["state"] in ("SUCCESS", "REFUND"):
        body |= {
            "transaction_id": txn["transaction_id"],
            "bank_type": "OTHERS",
            "success_time": txn["success_time"],
            "payer": {txn["openid_field"]: txn["openid"]},
            "amount": {
                "total": paid_total(txn),
                "payer_total": txn["payer_total"],
                "currency": "CNY",
                "payer_currency": "CNY",
            },
        }
        if promotions := promotion_detail(txn):
            body["promotion_detail"] = promotions
    else:
        body["amount"] = {"total": txn["total"], "currency": "CNY", "payer_currency": "CNY"}
    return body
