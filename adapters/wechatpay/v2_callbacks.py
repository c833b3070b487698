"""API v2's callbacks, read into the same typed notices as v3's (docs/wechatpay-protocol.md §6.3–§6.5).

Three arrive: the pay result (signed XML), the refund result (``req_info``
encrypted with AES-256-ECB under the MD5 of the API key; the envelope has no
``sign``, so the merchant is the one named by ``mch_id`` whose key decrypts
it) and Native mode 1's product scan (signed XML asking for a prepay).  A
query answer (``orderquery``, ``refundquery``) goes through the same
translations as a notification.  The event types are v3's names, so the
application dispatches v2 and v3 callbacks with one table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from adapters.wechatpay import v2_signing
from adapters.wechatpay.beijing import BEIJING, from_compact
from adapters.wechatpay.callbacks import Callback, CallbackRejected
from adapters.wechatpay.config import Merchant
from adapters.wechatpay.errors import SignatureError
from domain.notices import RefundNotice, TransactionNotice
from domain.notification import Notification

# refundquery's refund_status_$n and the refund notice's refund_status, in v3's words
REFUND_STATUS = {"SUCCESS": "SUCCESS", "REFUNDCLOSE": "CLOSED", "PROCESSING": "PROCESSING", "CHANGE": "ABNORMAL"}
REFUND_EVENT = {"SUCCESS": "REFUND.SUCCESS", "CLOSED": "REFUND.CLOSED", "ABNORMAL": "REFUND.ABNORMAL"}


@dataclass(frozen=True)
class ProductScan:
    """Native mode 1: a payer scanned a printed product code (https://pay.weixin.qq.com/wiki/doc/api/native.php?chapter=6_4)."""

    merchant: Merchant
    product_id: str
    openid: str
    fields: dict[str, str]


def _fen(fields: Mapping[str, str], name: str) -> int | None:
    value = fields.get(name, "")
    if value == "":
        return None
    if not value.isdigit():
        raise CallbackRejected(f"{name} is not an integer number of fen")
    return int(value)


def _v2_time(value: str) -> datetime | None:
    if not value:
        return None
    try:
        return from_compact(value)
    except ValueError:
        pass
    try:  # refunds write "2018-11-19 16:24:13"
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError:
        raise CallbackRejected(f"not a WeChat Pay v2 time: {value!r}") from None


def v2_transaction_notice(fields: Mapping[str, str], trade_state: str | None = None) -> TransactionNotice:
    """``orderquery``'s answer or a pay notification as a ``TransactionNotice``.

    ``total_fee`` is the order amount; ``cash_fee`` what the payer paid in
    cash (a coupon makes up the rest), v3's ``payer_total``.
    """
    out_trade_no = fields.get("out_trade_no", "")
    state = trade_state or fields.get("trade_state", "")
    if not out_trade_no or not state:
        raise CallbackRejected("transaction has no out_trade_no or trade_state")
    notice = TransactionNotice(
        out_trade_no=out_trade_no,
        trade_state=state,
        transaction_id=fields.get("transaction_id") or None,
        total_fen=_fen(fields, "total_fee"),
        payer_total_fen=_fen(fields, "cash_fee"),
        success_time=_v2_time(fields.get("time_end", "")),
        trade_state_desc=fields.get("trade_state_desc", ""),
        nocash_fen=_v2_nocash(fields),
    )
    if notice.took_money and not (notice.transaction_id and notice.total_fen and notice.success_time):
        raise CallbackRejected("a paid transaction without transaction_id, total_fee or time_end")
    if notice.total_fen is not None and notice.nocash_fen > notice.total_fen:
        raise CallbackRejected("NO_CASH coupons exceed total_fee")
    return notice


def _v2_nocash(fields: Mapping[str, str]) -> int:
    """The 免充值券 among ``coupon_type_$n`` / ``coupon_fee_$n`` (``NO_CASH``; ``CASH`` ones WeChat settles)."""
    count = fields.get("coupon_count", "0")
    if not count.isdigit():
        raise CallbackRejected(f"coupon_count {count!r} is not a number")
    return sum(
        _fen(fields, f"coupon_fee_{n}") or 0 for n in range(int(count)) if fields.get(f"coupon_type_{n}") == "NO_CASH"
    )


def v2_refund_notice(fields: Mapping[str, str], suffix: str = "") -> RefundNotice:
    """A decrypted refund notice, or refund ``suffix`` (``_0``, ``_1``…) of a ``refundquery`` answer."""
    raw_status = fields.get(f"refund_status{suffix}", "")
    if raw_status not in REFUND_STATUS:
        raise CallbackRejected(f"unknown refund_status {raw_status!r}")
    out_refund_no = fields.get(f"out_refund_no{suffix}", "")
    if not out_refund_no:
        raise CallbackRejected("refund has no out_refund_no")
    success = fields.get("success_time" if not suffix else f"refund_success_time{suffix}", "")
    return RefundNotice(
        out_refund_no=out_refund_no,
        out_trade_no=fields.get("out_trade_no", ""),
        refund_id=fields.get(f"refund_id{suffix}", ""),
        status=REFUND_STATUS[raw_status],
        refund_fen=_fen(fields, f"refund_fee{suffix}"),
        success_time=_v2_time(success),
        user_received_account=fields.get(f"refund_recv_accout{suffix}", ""),
        settlement_refund_fen=_fen(fields, f"settlement_refund_fee{suffix}"),
    )


def _parse(body: bytes) -> dict[str, str]:
    try:
        return v2_signing.parse_xml(body)
    except v2_signing.MalformedXml as exc:
        raise CallbackRejected(str(exc)) from None


def _merchant_named(fields: Mapping[str, str], merchants: Mapping[str, Merchant]) -> Merchant:
    """The v2 merchant the envelope names: ``mch_id`` (+ ``sub_mch_id`` in partner mode) and ``appid``."""
    mch_id, sub_mch_id = fields.get("mch_id", ""), fields.get("sub_mch_id", "")
    named = merchants.get(sub_mch_id or mch_id)  # the id orders are kept under: found at once, however many
    for merchant in [named] if named is not None else merchants.values():
        if not merchant.is_v2 or merchant.account_mchid != mch_id:
            continue
        if merchant.is_partner and merchant.sub_mchid != sub_mch_id:
            continue
        if not merchant.is_partner and sub_mch_id:
            continue
        if fields.get("appid") and not merchant.knows_appid(fields["appid"]):
            raise CallbackRejected("appid is not one of the configured merchant's apps")
        return merchant
    raise CallbackRejected(f"no v2 merchant {mch_id}{'/' + sub_mch_id if sub_mch_id else ''} is configured")


def _notification(
    notification_id: str, event_type: str, headers: Mapping[str, str], body: bytes, resource: dict[str, str]
) -> Notification:
    return Notification(
        id=notification_id,
        event_type=event_type,
        headers=dict(headers),
        body=body.decode("utf-8", errors="replace"),
        resource=resource,
    )


def read_pay_notify(headers: Mapping[str, str], body: bytes, merchants: Mapping[str, Merchant]) -> Callback:
    """The pay result: signed over every field (coupon ones included), both codes SUCCESS, this merchant's."""
    fields = _parse(body)
    merchant = _merchant_named(fields, merchants)
    v2_signing.check(fields, merchant.v2_key, merchant.v2_sign_type)
    if fields.get("return_code") != "SUCCESS":
        raise CallbackRejected(f"return_code {fields.get('return_code')!r}: {fields.get('return_msg', '')}")
    if fields.get("result_code") != "SUCCESS":
        # WeChat sends pay results for money taken; a failed one changes nothing (the query tells the truth)
        raise CallbackRejected(f"result_code {fields.get('result_code')!r}: {fields.get('err_code', '')}")
    notice = v2_transaction_notice(fields, trade_state="SUCCESS")
    # v2 notifications carry no id: a redelivery says the same about the same transaction
    notification = _notification(f"v2-pay-{notice.transaction_id}", "TRANSACTION.SUCCESS", headers, body, fields)
    return Callback(merchant, notification, notice)


def read_refund_notify(headers: Mapping[str, str], body: bytes, merchants: Mapping[str, Merchant]) -> Callback:
    """The refund result: no ``sign``; only the merchant's key decrypts ``req_info``, which is the proof."""
    fields = _parse(body)
    if fields.get("return_code") != "SUCCESS":
        raise CallbackRejected(f"return_code {fields.get('return_code')!r}: {fields.get('return_msg', '')}")
    merchant = _merchant_named(fields, merchants)
    req_info = fields.get("req_info", "")
    if not req_info:
        raise CallbackRejected("refund notification without req_info")
    try:
        decrypted = v2_signing.decrypt_req_info(req_info, merchant.v2_key)
    except v2_signing.MalformedXml:
        raise SignatureError("req_info decrypted to something that is not WeChat's XML") from None
    notice = v2_refund_notice(decrypted)
    event_type = REFUND_EVENT.get(notice.status)
    if event_type is None:
        raise CallbackRejected(f"a refund notification with status {notice.status}")
    digest = hashlib.sha256(req_info.encode()).hexdigest()[:16]
    notification = _notification(
        f"v2-refund-{notice.refund_id}-{digest}", event_type, headers, body, fields | decrypted
    )
    return Callback(merchant, notification, notice)


def read_product_scan(body: bytes, merchants: Mapping[str, Merchant]) -> ProductScan:
    """Native mode 1's callback: ``appid, openid, mch_id, is_subscribe, nonce_str, product_id, sign``."""
    fields = _parse(body)
    merchant = _merchant_named(fields, merchants)
    v2_signing.check(fields, merchant.v2_key)
    product_id, openid = fields.get("product_id", ""), fields.get("openid", "")
    if not product_id or not openid:
        raise CallbackRejected("product scan without product_id or openid")
    return ProductScan(merchant, product_id, openid, fields)


def product_scan_answer(merchant: Merchant, prepay_id: str | None, error: str | None = None) -> bytes:
    """The signed answer to a product scan: the prepay, or ``result_code=FAIL`` with ``err_code_des``."""
    answer = {
        "return_code": "SUCCESS",
        "return_msg": "OK",
        "appid": merchant.appid,
        "mch_id": merchant.account_mchid,
        "nonce_str": v2_signing.new_nonce(),
        "prepay_id": prepay_id or "",
        "result_code": "FAIL" if error else "SUCCESS",
    }
    if merchant.is_partner:
        answer |= {"sub_mch_id": merchant.sub_mchid, "sub_appid": merchant.sub_appid}
    if error:
        answer["err_code_des"] = error
    return v2_signing.to_xml(v2_signing.signed(answer, merchant.v2_key, merchant.v2_sign_type))


SUCCESS_XML = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"


def fail_xml(message: str) -> bytes:
    """The FAIL answer WeChat retries on (docs/wechatpay-protocol.md §6.3)."""
    return v2_signing.to_xml({"return_code": "FAIL", "return_msg": message[:128]})
