"""Refunds as WeChat Pay runs them: PROCESSING, then SUCCESS, CLOSED or ABNORMAL (docs/wechatpay-protocol.md §4.5, §3.4)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from sandbox.clock import BEIJING, SandboxClock, rfc3339
from sandbox.config import SandboxMerchant
from sandbox.errors import WechatError, param_error
from sandbox.store import SandboxStore
from sandbox.transactions import Transactions, coupon_fen, coupon_type, paid_total, settlement_total
from sandbox.validation import check_amount, check_notify_url, check_out_refund_no

MAX_REFUNDS = 50


def refund_key(mchid: str, sub_mchid: str, out_refund_no: str) -> str:
    return f"{mchid}|{sub_mchid}|{out_refund_no}"


def coupon_shares(txn: dict[str, Any], refund_fen: int, refunded_before: int, discount_before: int) -> dict[str, Any]:
    """A refund gives the coupon back pro rata, as WeChat does: of everything refunded so far, the coupon's share
    is ``refunded × coupon // total`` (so refunds that add up to the total give the whole coupon back).

    ``discount_refund`` is the coupon's part, ``payer_refund`` the payer's; ``settlement_refund`` (应结退款金额)
    what WeChat takes back from the merchant: the refund less its 免充值券 part (a 充值券's part was settled, and
    goes back from the merchant like the payer's).
    """
    total, coupon = paid_total(txn), coupon_fen(txn)
    discount = (refunded_before + refund_fen) * coupon // total - discount_before if total else 0
    nocash = discount if coupon_type(txn) == "NOCASH" else 0
    return {
        "discount_refund": discount,
        "payer_refund": refund_fen - discount,
        "settlement_refund": refund_fen - nocash,
        "cash_coupon_refund": discount - nocash,  # 充值券退款金额
        "settlement_total": settlement_total(txn),
        "coupon_type": coupon_type(txn),
    }


def shares_of(refund: dict[str, Any]) -> dict[str, int]:
    """A refund's shares; a refund kept before coupons were split gives all of it from the payer."""
    amount = int(refund["refund"])
    return {
        "discount_refund": int(refund.get("discount_refund", 0)),
        "payer_refund": int(refund.get("payer_refund", amount)),
        "settlement_refund": int(refund.get("settlement_refund", amount)),
        "cash_coupon_refund": int(refund.get("cash_coupon_refund", 0)),
        "settlement_total": int(refund.get("settlement_total", refund["total"])),
    }


class Refunds:
    def __init__(self, store: SandboxStore, clock: SandboxClock, transactions: Transactions) -> None:
        self.store = store
        self.clock = clock
        self.transactions = transactions

    def create(
        self,
        merchant: SandboxMerchant,
        body: dict[str, Any],
        faults: dict[str, Any],
        time_factor: float,
        api: str = "v3",
    ) -> dict[str, Any]:
        sub_mchid = body.get("sub_mchid") or ""
        if sub_mchid and sub_mchid not in merchant.sub_merchants:
            raise WechatError(400, "MCH_NOT_EXISTS", "特约商户号不存在")
        out_refund_no = check_out_refund_no(body.get("out_refund_no"))
        amount = body.get("amount")
        if not isinstance(amount, dict):
            raise param_error("amount", "amount 必填")
        refund_fen = check_amount(amount.get("refund"), "amount/refund")
        total_fen = check_amount(amount.get("total"), "amount/total")
        if body.get("notify_url") is not None:
            check_notify_url(body["notify_url"])
        with self.store.transaction():
            txn = self._paid_transaction(merchant, sub_mchid, body)
            key = refund_key(merchant.mchid, sub_mchid, out_refund_no)
            existing = self.store.get("refund", key)
            if existing is not None:
                # The same out_refund_no refunds once: a retry gets the same refund.
                if existing["out_trade_no"] != txn["out_trade_no"] or existing["refund"] != refund_fen:
                    raise WechatError(400, "INVALID_REQUEST", "商户退款单号已被使用，且请求参数与原退款单不一致")
                return existing
            total = paid_total(txn)  # what WeChat says was paid, not the prepay's total
            if total_fen != total:
                raise WechatError(400, "INVALID_REQUEST", "订单金额与原订单金额不一致")
            refunds = [r for r in self.store.all("refund") if r["txn_key"] == txn["key"]]
            if len(refunds) >= MAX_REFUNDS:
                raise WechatError(400, "INVALID_REQUEST", f"单笔订单最多退款{MAX_REFUNDS}次")
            live = [r for r in refunds if r["status"] != "CLOSED"]
            committed = sum(r["refund"] for r in live)
            if refund_fen > total - committed:
                raise WechatError(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
            shares = coupon_shares(txn, refund_fen, committed, sum(r.get("discount_refund", 0) for r in live))
            balance = faults.get("refund_balance_fen")
            if balance is not None and refund_fen > int(balance):
                raise WechatError(403, "NOT_ENOUGH", "基本账户余额不足，请充值后重新发起")
            now = self.clock.now()
            refund = {
                "key": key,
                "api": api,  # which notification the result is sent as
                "txn_key": txn["key"],
                "mchid": merchant.mchid,
                "sub_mchid": sub_mchid,
                "refund_id": "50" + now.astimezone(BEIJING).strftime("%Y%m%d") + f"{secrets.randbelow(10**19):019d}",
                "out_refund_no": out_refund_no,
                "transaction_id": txn["transaction_id"],
                "out_trade_no": txn["out_trade_no"],
                "reason": body.get("reason", ""),
                "notify_url": body.get("notify_url") or txn["notify_url"],
                "status": "PROCESSING",
                "create_time": rfc3339(now),
                "success_time": None,
                "refund": refund_fen,
                "total": total,
                "payer_total": txn["payer_total"],
                **shares,
                # where the refund goes next, and when (real seconds, scaled like notifications)
                "next_status": faults.get("refund_result", "SUCCESS"),
                "settle_at": time.time() + float(faults.get("refund_delay_seconds", 1.0)) / time_factor,
            }
            self.store.put("refund", key, refund)
            self.store.alias("refund", f"orn:{out_refund_no}", key)
            self.store.alias("refund", f"rid:{refund['refund_id']}", key)
            txn["state"] = "REFUND"
            self.store.put("transaction", txn["key"], txn)
        return refund

    def _paid_transaction(self, merchant: SandboxMerchant, sub_mchid: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            if body.get("transaction_id"):
                txn = self.transactions.find_by_id(merchant, sub_mchid, str(body["transaction_id"]))
            elif body.get("out_trade_no"):
                txn = self.transactions.find(merchant, sub_mchid, str(body["out_trade_no"]))
            else:
                raise param_error("out_trade_no", "transaction_id 和 out_trade_no 必须二选一")
        except WechatError as exc:
            if exc.code == "ORDER_NOT_EXIST":
                raise WechatError(404, "RESOURCE_NOT_EXISTS", "订单不存在") from None
            raise
        if txn["state"] not in ("SUCCESS", "REFUND"):
            raise WechatError(404, "RESOURCE_NOT_EXISTS", "订单未支付，不能退款")
        return txn

    def find(self, merchant: SandboxMerchant, sub_mchid: str, out_refund_no: str) -> dict[str, Any]:
        refund = self.store.get("refund", refund_key(merchant.mchid, sub_mchid, out_refund_no))
        if refund is None:
            raise WechatError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return refund

    def apply_abnormal(
        self,
        merchant: SandboxMerchant,
        refund_id: str,
        body: dict[str, Any],
        faults: dict[str, Any],
        time_factor: float,
    ) -> dict[str, Any]:
        """发起异常退款: an ABNORMAL refund paid again (to the merchant's or the payer's bank card), then SUCCESS.

        https://pay.weixin.qq.com/doc/v3/merchant/4013070426
        """
        kind = body.get("type")
        if kind not in ("USER_BANK_CARD", "MERCHANT_BANK_CARD"):
            raise param_error("type", "type 应为 USER_BANK_CARD 或 MERCHANT_BANK_CARD")
        if kind == "USER_BANK_CARD" and not all(body.get(k) for k in ("bank_type", "bank_account", "real_name")):
            raise param_error("bank_account", "退款到用户银行卡需要 bank_type、bank_account、real_name")
        with self.store.transaction():
            refund = self.store.by_alias("refund", f"rid:{refund_id}")
            if (
                refund is None
                or refund["mchid"] != merchant.mchid
                or refund["out_refund_no"] != body.get("out_refund_no")
            ):
                raise WechatError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
            if refund.get("abnormal_applied") == kind and refund["status"] in ("PROCESSING", "SUCCESS"):
                return refund  # the same request again
            if refund["status"] != "ABNORMAL":
                raise WechatError(400, "INVALID_REQUEST", "退款单状态不是退款异常，无法发起异常退款")
            refund["status"] = "PROCESSING"
            refund["abnormal_applied"] = kind
            refund["next_status"] = "SUCCESS"
            refund["settle_at"] = time.time() + float(faults.get("refund_delay_seconds", 1.0)) / time_factor
            self.store.put("refund", refund["key"], refund)
        return refund

    def settle(self, refund: dict[str, Any], status: str) -> dict[str, Any]:
        """Move a refund to its result; ABNORMAL may still end SUCCESS or CLOSED later."""
        refund["status"] = status
        if status == "SUCCESS":
            refund["success_time"] = rfc3339(self.clock.now())
            refund["user_received_account"] = {"MERCHANT_BANK_CARD": "商户银行卡", "USER_BANK_CARD": "用户银行卡"}.get(
                refund.get("abnormal_applied", ""), "支付用户零钱"
            )
        refund["settle_at"] = None
        self.store.put("refund", refund["key"], refund)
        return refund

    def due(self) -> list[dict[str, Any]]:
        now = time.time()
        return [
            r
            for r in self.store.all("refund")
            if r["status"] == "PROCESSING"
            and r.get("settle_at")
            and r["settle_at"] <= now
            and r["next_status"] != "PROCESSING"
        ]


def _promotions(refund: dict[str, Any], shares: dict[str, int]) -> list[dict[str, Any]]:
    if not shares["discount_refund"]:
        return []
    return [
        {
            "promotion_id": f"1000{refund['transaction_id'][-10:]}",
            "scope": "GLOBAL",
            "type": "COUPON",
            "amount": refund["total"] - refund["payer_total"],
            "refund_amount": shares["discount_refund"],
        }
    ]


def refund_json(refund: dict[str, Any]) -> dict[str, Any]:
    shares = shares_of(refund)
    body: dict[str, Any] = {
        "refund_id": refund["refund_id"],
        "out_refund_no": refund["out_refund_no"],
        "transaction_id": refund["transaction_id"],
        "out_trade_no": refund["out_trade_no"],
        "channel": "ORIGINAL",
        "user_received_account": refund.get("user_received_account", "支付用户零钱"),
        "create_time": refund["create_time"],
        "status": refund["status"],
        "funds_account": "AVAILABLE",
        "amount": {
            "total": refund["total"],
            "refund": refund["refund"],
            "payer_total": refund["payer_total"],
            "payer_refund": shares["payer_refund"],
            "settlement_refund": shares["settlement_refund"],
            "settlement_total": shares["settlement_total"],
            "discount_refund": shares["discount_refund"],
            "currency": "CNY",
            "from": [],
        },
        "promotion_detail": _promotions(refund, shares),
    }
    if refund["success_time"]:
        body["success_time"] = refund["success_time"]
    return body


def refund_notice_json(refund: dict[str, Any]) -> dict[str, Any]:
    """The decrypted resource of a ``REFUND.*`` notification (docs/wechatpay-protocol.md §3.4)."""
    ids = (
        {"sp_mchid": refund["mchid"], "sub_mchid": refund["sub_mchid"]}
        if refund["sub_mchid"]
        else {"mchid": refund["mchid"]}
    )
    body = ids | {
        "transaction_id": refund["transaction_id"],
        "out_trade_no": refund["out_trade_no"],
        "refund_id": refund["refund_id"],
        "out_refund_no": refund["out_refund_no"],
        "refund_status": refund["status"],
        "user_received_account": refund.get("user_received_account", "支付用户零钱"),
        "amount": {
            "total": refund["total"],
            "refund": refund["refund"],
            "payer_total": refund["payer_total"],
            "payer_refund": shares_of(refund)["payer_refund"],
            "settlement_refund": shares_of(refund)["settlement_refund"],
            "settlement_total": shares_of(refund)["settlement_total"],
            "discount_refund": shares_of(refund)["discount_refund"],
        },
    }
    if refund["success_time"]:
        body["success_time"] = refund["success_time"]
    return body
