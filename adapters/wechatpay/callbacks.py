"""Callbacks in three small steps: verify and decrypt, translate into one typed notice, (the application) applies.

``read_callback`` does the adapter's two: the signature over the raw body
(https://pay.weixin.qq.com/wiki/doc/api_external/ch/wechatpay/wechatpay4_1.shtml), the AES-256-GCM
resource (https://pay.weixin.qq.com/wiki/doc/api_external/ch/apis/chapter3_6_11.shtml), then the
resource as a ``TransactionNotice`` or ``RefundNotice``.  A query answer is
translated by the same functions as a notification, so the two can never
disagree about what they change.  What may be refused here is what this
layer can see: a bad signature (``SignatureError``), content that is not
WeChat's (``CallbackRejected``); whether the order exists is the application's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.wechatpay import signing
from adapters.wechatpay.config import Merchant
from adapters.wechatpay.errors import SignatureError, WechatPayError
from adapters.wechatpay.platform import PlatformKeys
from domain.notices import RefundNotice, TransactionNotice
from domain.notification import Notification


class CallbackRejected(WechatPayError):
    """A callback that verified but cannot be accepted (wrong merchant, malformed content)."""


@dataclass(frozen=True)
class Callback:
    """A verified callback: whose it is, the notification to keep whole, and what it says."""

    merchant: Merchant
    notification: Notification
    notice: TransactionNotice | RefundNotice

    @property
    def event_type(self) -> str:
        return self.notification.event_type


def _envelope(body: bytes) -> tuple[str, str, str, str, str]:
    """``id``, ``event_type`` and the resource's ``nonce``, ``associated_data``, ``ciphertext``."""
    try:
        envelope = json.loads(body)
        resource = envelope["resource"]
        return (
            str(envelope["id"]),
            str(envelope["event_type"]),
            resource["nonce"],
            resource.get("associated_data", ""),
            resource["ciphertext"],
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # RecursionError: nested too deep
        raise CallbackRejected("notification body is not WeChat Pay's JSON envelope") from None


def open_notification(
    headers: Mapping[str, str],
    body: bytes,
    merchants: Mapping[str, Merchant],
    keys: Mapping[str, PlatformKeys],
    now: float | None = None,
) -> tuple[Merchant, Notification]:
    """Verify the signature over the raw body, then decrypt with the merchant's APIv3 key.

    The envelope does not say whose it is: the merchant is the one whose keys
    verify the signature and whose APIv3 key decrypts the resource.
    """
    errors: list[str] = []
    tried: set[str] = set()  # accounts whose keys failed: a provider's sub-merchants share one, tried once
    for mchid, merchant in merchants.items():
        if merchant.account_mchid in tried:
            continue
        tried.add(merchant.account_mchid)
        try:
            keys[mchid].verify(headers, body, now)
        except SignatureError as exc:
            errors.append(str(exc))
            continue
        # parsed only once the signature holds: a forged body, however deep or large, is never parsed
        notification_id, event_type, nonce, ad, ciphertext = _envelope(body)
        try:
            plaintext = signing.aead_decrypt(merchant.apiv3_key, nonce, ad, ciphertext)
        except SignatureError as exc:
            errors.append(str(exc))
            continue
        try:
            decrypted = json.loads(plaintext)
        except (ValueError, RecursionError):
            raise CallbackRejected("decrypted resource is not JSON") from None
        if not isinstance(decrypted, dict):
            raise CallbackRejected("decrypted resource is not a JSON object")
        merchant = _sub_merchant(decrypted, merchant, merchants)
        check_merchant(decrypted, merchant)
        return merchant, Notification(
            id=notification_id,
            event_type=event_type,
            headers=dict(headers),
            body=body.decode("utf-8", errors="replace"),
            resource=decrypted,
        )
    reason = errors[0] if errors else "no merchant configured"
    if any("probe" in e for e in errors):
        reason = next(e for e in errors if "probe" in e)
    raise SignatureError(reason)


def _sub_merchant(resource: Mapping[str, Any], merchant: Merchant, merchants: Mapping[str, Merchant]) -> Merchant:
    """The provider's sub-merchant the resource names (``sub_mchid``), when it is one of ``merchants`` under the same
    account; else ``merchant`` (whose check then says what does not match)."""
    named = resource.get("sub_mchid")
    if merchant.is_partner and isinstance(named, str) and named != merchant.sub_mchid:
        other = merchants.get(named)
        if other is not None and other.account_mchid == merchant.account_mchid and other.is_partner:
            return other
    return merchant


def check_merchant(resource: Mapping[str, Any], merchant: Merchant) -> None:
    """The resource must be this merchant's: mchid/appid, or sp_mchid/sub_mchid (docs/wechatpay-protocol.md §3.3)."""
    if merchant.is_partner:
        if resource.get("sp_mchid") != merchant.account_mchid or resource.get("sub_mchid") != merchant.sub_mchid:
            raise CallbackRejected("sp_mchid/sub_mchid do not match the configured merchant")
        appid = resource.get("sp_appid")
    else:
        if resource.get("mchid") != merchant.account_mchid:
            raise CallbackRejected("mchid does not match the configured merchant")
        appid = resource.get("appid")
    if appid is not None and not merchant.knows_appid(appid):
        raise CallbackRejected("appid is not one of the configured merchant's apps")


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise CallbackRejected(f"not an RFC3339 time: {value!r}") from None


def _fen(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CallbackRejected(f"{field} is not an integer number of fen")
    return value


def transaction_notice(resource: Mapping[str, Any]) -> TransactionNotice:
    try:
        out_trade_no, trade_state = str(resource["out_trade_no"]), str(resource["trade_state"])
    except KeyError as missing:
        raise CallbackRejected(f"transaction has no {missing.args[0]}") from None
    amount = resource.get("amount") or {}
    notice = TransactionNotice(
        out_trade_no=out_trade_no,
        trade_state=trade_state,
        transaction_id=resource.get("transaction_id"),
        total_fen=_fen(amount.get("total"), "amount.total"),
        payer_total_fen=_fen(amount.get("payer_total"), "amount.payer_total"),
        success_time=_time(resource.get("success_time")),
        trade_state_desc=str(resource.get("trade_state_desc", "")),
        nocash_fen=_nocash(resource.get("promotion_detail")),
    )
    if notice.took_money and not (notice.transaction_id and notice.total_fen and notice.success_time):
        raise CallbackRejected("a paid transaction without transaction_id, amount.total or success_time")
    if notice.total_fen is not None and notice.nocash_fen > notice.total_fen:
        raise CallbackRejected("promotion_detail's NOCASH coupons exceed amount.total")
    return notice


def _nocash(promotions: Any) -> int:
    """The 免充值券 of ``promotion_detail[]``: coupons of ``type`` NOCASH (CASH ones WeChat settles)."""
    if promotions is None:
        return 0
    if not isinstance(promotions, list):
        raise CallbackRejected("promotion_detail is not a list")
    total = 0
    for promotion in promotions:
        if isinstance(promotion, dict) and promotion.get("type") == "NOCASH":
            total += _fen(promotion.get("amount"), "promotion_detail.amount") or 0
    return total


def refund_notice(resource: Mapping[str, Any]) -> RefundNotice:
    status = resource.get("refund_status") or resource.get("status")
    try:
        return RefundNotice(
            out_refund_no=str(resource["out_refund_no"]),
            out_trade_no=str(resource.get("out_trade_no", "")),
            refund_id=str(resource.get("refund_id", "")),
            status=str(status),
            refund_fen=_fen((resource.get("amount") or {}).get("refund"), "amount.refund"),
            success_time=_time(resource.get("success_time")),
            user_received_account=str(resource.get("user_received_account", "")),
            settlement_refund_fen=_fen(
                (resource.get("amount") or {}).get("settlement_refund"), "amount.settlement_refund"
            ),
        )
    except KeyError as missing:
        raise CallbackRejected(f"refund has no {missing.args[0]}") from None


def paid_transaction_notice(resource: Mapping[str, Any]) -> TransactionNotice:
    """``TRANSACTION.SUCCESS`` is only ever sent for money taken; anything else is not WeChat's."""
    notice = transaction_notice(resource)
    if not notice.took_money:
        raise CallbackRejected(f"TRANSACTION.SUCCESS with trade_state {notice.trade_state}")
    return notice


# The notification types WeChat Pay v3 sends the ledger, and how each resource is read
# (docs/wechatpay-protocol.md §3.3, §3.4).
TRANSLATIONS: dict[str, Callable[[Mapping[str, Any]], TransactionNotice | RefundNotice]] = {
    "TRANSACTION.SUCCESS": paid_transaction_notice,
    "REFUND.SUCCESS": refund_notice,
    "REFUND.ABNORMAL": refund_notice,
    "REFUND.CLOSED": refund_notice,
}


def read_callback(
    headers: Mapping[str, str],
    body: bytes,
    merchants: Mapping[str, Merchant],
    keys: Mapping[str, PlatformKeys],
    now: float | None = None,
) -> Callback:
    """Verify, decrypt and translate one v3 notification into one typed notice."""
    merchant, notification = open_notification(headers, body, merchants, keys, now)
    translate = TRANSLATIONS.get(notification.event_type)
    if translate is None:
        raise CallbackRejected(f"unexpected event_type {notification.event_type}")
    return Callback(merchant, notification, translate(notification.resource))
