"""The ledger's only door to WeChat Pay v3 (docs/wechatpay-protocol.md §1, §4).

Every request is signed; every answer is verified over its raw bytes before
anything in it is believed.  Only what WeChat says may be retried is retried
— 5xx, timeouts, ``FREQUENCY_LIMITED`` — with the same body (so the same
``out_trade_no`` / ``out_refund_no``), fresh signatures, backoff, a bounded
number of times.  No database transaction is ever open across these calls:
the application records before and after, never during.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

from adapters.wechatpay import evidence, signing
from adapters.wechatpay.beijing import rfc3339
from adapters.wechatpay.callbacks import refund_notice, transaction_notice
from adapters.wechatpay.config import Merchant
from adapters.wechatpay.errors import (
    MerchantConfigError,
    SignatureError,
    WechatPayBusinessError,
    WechatPayError,
    WechatPayNotFound,
    WechatPayRateLimited,
    WechatPayUnavailable,
)
from adapters.wechatpay.merchant_book import MerchantBook
from adapters.wechatpay.platform import PlatformCertificate, PlatformKeys, decrypt_certificates
from adapters.wechatpay.retries import CallStats, Retry, endpoint_of
from domain.notices import RefundNotice, TransactionNotice
from domain.order import Order
from domain.payment import Payment
from domain.refund import Refund
from domain.status import CHANNELS_NEEDING_OPENID, Channel

ENDPOINTS = {"native": "native", "jsapi": "jsapi", "miniprogram": "jsapi", "app": "app", "h5": "h5"}
NOT_RETRYABLE_5XX = ("OPENID_MISMATCH", "INVALID_TRANSACTIONID")


@dataclass(frozen=True)
class PrepayRequest:
    """One attempt as WeChat is asked to open it (v3 ``/v3/pay/transactions/{channel}``,
    https://pay.weixin.qq.com/doc/v3/merchant/4012791856; v2 ``/pay/unifiedorder``,
    https://pay.weixin.qq.com/wiki/doc/api/native.php?chapter=9_1): built once from the attempt, sent whole."""

    channel: str
    out_trade_no: str
    description: str
    total_fen: int
    time_expire: datetime
    attach: str | None = None
    payer_openid: str | None = None
    client_ip: str = "127.0.0.1"  # H5's payer_client_ip (v2 spbill_create_ip)
    product_id: str | None = None  # Native mode 1: the printed code's product

    @classmethod
    def of(cls, payment: Payment, order: Order, client_ip: str, product_id: str | None = None) -> PrepayRequest:
        """The request for ``payment``, an attempt of ``order`` (whose ``attach`` WeChat hands back)."""
        return cls(
            payment.channel,
            payment.out_trade_no,
            payment.description,
            payment.amount_fen,
            payment.expire_at,
            order.attach,
            payment.payer_openid,
            client_ip,
            product_id,
        )


@dataclass(frozen=True)
class RefundRequest:
    """One refund as WeChat is asked to make it (v3 ``/v3/refund/domestic/refunds``,
    https://pay.weixin.qq.com/doc/v3/merchant/4012791862; v2 ``/secapi/pay/refund``): the same
    ``out_refund_no`` and body on every retry, so WeChat makes it once."""

    out_trade_no: str
    out_refund_no: str
    refund_fen: int
    total_fen: int
    reason: str = ""

    @classmethod
    def of(cls, refund: Refund) -> RefundRequest:
        return cls(refund.out_trade_no, refund.out_refund_no, refund.amount_fen, refund.total_fen, refund.reason)


@dataclass(frozen=True)
class PrepayResult:
    """What the payer's side needs, by channel."""

    prepay_id: str | None = None
    code_url: str | None = None
    h5_url: str | None = None
    pay_params: dict[str, str] | None = None
    app_params: dict[str, str] | None = None


class WechatPayClient:
    def __init__(
        self,
        base_url: str,
        merchants: Mapping[str, Merchant],
        *,
        http: httpx.Client | None = None,
        max_attempts: int = 4,
        backoff_seconds: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
        refresh_claim: Callable[[str], bool] | None = None,
    ) -> None:
        """``refresh_claim(mchid)`` says whether this process may download that merchant's platform certificates
        now, shared with the other workers (``adapters.throttles``); without it, each process decides alone."""
        self.base_url = base_url.rstrip("/")
        self.book = merchants if isinstance(merchants, MerchantBook) else MerchantBook(merchants)
        self.merchants = self.book.on_api("v3")  # v2 ones have their client
        self.http = http or httpx.Client(
            timeout=httpx.Timeout(10.0, connect=3.0), limits=httpx.Limits(max_connections=50)
        )
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        self.stats = CallStats()
        # WeChat's keys, one set per account that signs (a provider's serve all its sub-merchants), made on first use
        self.keys = PlatformKeysBook(self.merchants, self.download_certificates, refresh_claim)

    def merchant(self, mchid: str) -> Merchant:
        try:
            return self.merchants[mchid]
        except KeyError:
            raise MerchantConfigError(f"merchant {mchid} is not configured") from None

    def close_http(self) -> None:
        self.http.close()

    # -- the one way to call WeChat ------------------------------------------------

    def call(
        self, merchant: Merchant, method: str, path: str, body: dict[str, Any] | None = None, *, verify: bool = True
    ) -> httpx.Response:
        raw = b"" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        url = path if path.startswith("http") else self.base_url + path

        def attempt() -> httpx.Response:
            response = self._send(merchant, method, url, raw)
            if verify:
                self.keys[merchant.mchid].verify(response.headers, response.content)
            return response

        retry = Retry(self.max_attempts, self.backoff_seconds, self.sleep, self.stats, NOT_RETRYABLE_5XX)
        return retry.run(attempt, lambda response: str(response.status_code), endpoint_of(url))

    def _send(self, merchant: Merchant, method: str, url: str, raw: bytes) -> httpx.Response:
        parts = urlsplit(url)
        canonical = parts.path + (f"?{parts.query}" if parts.query else "")
        certificate = merchant.signing_certificate()
        headers = {
            "Accept": "application/json",
            "User-Agent": "zhangben/0.1 (+httpx)",
            "Authorization": signing.build_authorization(
                signing.Signer(merchant.account_mchid, certificate.serial_no, certificate.private_key),
                method,
                canonical,
                raw,
                str(int(time.time())),
                signing.new_nonce(),
            ),
        }
        if raw:
            headers["Content-Type"] = "application/json"
        if merchant.public_key_id:
            # asks WeChat to sign its answer with the public key (docs/wechatpay-protocol.md §2.3, §9.4)
            headers["Wechatpay-Serial"] = merchant.public_key_id
        sending = evidence.Sending(endpoint_of(url), method, url, raw)
        try:
            response = self.http.request(method, url, content=raw, headers=headers)
        except httpx.TimeoutException as exc:
            failure = WechatPayUnavailable(f"WeChat Pay timed out: {type(exc).__name__}", code="TIMEOUT")
            evidence.keep(sending.unanswered(str(failure)))
            raise failure from None
        except httpx.TransportError as exc:
            failure = WechatPayUnavailable(f"WeChat Pay unreachable: {exc}", code="UNREACHABLE")
            evidence.keep(sending.unanswered(str(failure)))
            raise failure from None
        error = None if response.is_success else error_for(response)
        evidence.keep(
            sending.answered(
                response.status_code,
                response.headers,
                response.content,
                str(error or ""),
                keep_response="/billdownload/" not in url,  # the bill file itself is kept apart, compressed
            )
        )
        if error is None:
            return response
        raise error

    # -- payments --------------------------------------------------------------------

    def prepay(self, merchant: Merchant, request: PrepayRequest) -> PrepayResult:
        channel = request.channel
        body: dict[str, Any] = self._ids(merchant) | {
            "description": request.description,
            "out_trade_no": request.out_trade_no,
            "time_expire": rfc3339(request.time_expire),
            "notify_url": merchant.notify_url,
            "amount": {"total": request.total_fen, "currency": "CNY"},
        }
        if request.attach:
            body["attach"] = request.attach
        if channel in CHANNELS_NEEDING_OPENID:
            body["payer"] = self._payer(merchant, request.payer_openid or "")
        if channel == Channel.H5:
            body["scene_info"] = {"payer_client_ip": request.client_ip, "h5_info": {"type": "Wap"}}
        prefix = "/v3/pay/partner/transactions/" if merchant.is_partner else "/v3/pay/transactions/"
        answer = self.call(merchant, "POST", prefix + ENDPOINTS[channel], body).json()
        if channel == Channel.NATIVE:
            return PrepayResult(code_url=answer["code_url"])
        if channel == Channel.H5:
            return PrepayResult(h5_url=answer["h5_url"])
        prepay_id = answer["prepay_id"]
        if channel == Channel.APP:
            return PrepayResult(prepay_id=prepay_id, app_params=app_params(merchant, prepay_id))
        return PrepayResult(prepay_id=prepay_id, pay_params=pay_params(merchant, prepay_id))

    def _ids(self, merchant: Merchant) -> dict[str, str]:
        if not merchant.is_partner:
            return {"appid": merchant.appid, "mchid": merchant.account_mchid}
        ids = {"sp_appid": merchant.appid, "sp_mchid": merchant.account_mchid, "sub_mchid": merchant.sub_mchid}
        if merchant.sub_appid:
            ids["sub_appid"] = merchant.sub_appid
        return ids

    @staticmethod
    def _payer(merchant: Merchant, openid: str) -> dict[str, str]:
        if not merchant.is_partner:
            return {"openid": openid}
        # A sub-merchant's own app (sub_appid) knows its payers by sub_openid.
        return {"sub_openid": openid} if merchant.sub_appid else {"sp_openid": openid}

    def _query_string(self, merchant: Merchant) -> str:
        if merchant.is_partner:
            return urlencode({"sp_mchid": merchant.account_mchid, "sub_mchid": merchant.sub_mchid})
        return urlencode({"mchid": merchant.account_mchid})

    def query(self, merchant: Merchant, out_trade_no: str) -> dict[str, Any]:
        prefix = "/v3/pay/partner/transactions" if merchant.is_partner else "/v3/pay/transactions"
        return _json(self.call(merchant, "GET", f"{prefix}/out-trade-no/{out_trade_no}?{self._query_string(merchant)}"))

    def transaction(self, merchant: Merchant, out_trade_no: str) -> TransactionNotice:
        """What WeChat says about one attempt, read the way a notification is read."""
        return transaction_notice(self.query(merchant, out_trade_no))

    def transaction_by_id(self, merchant: Merchant, transaction_id: str) -> TransactionNotice:
        """The same, asked by WeChat's own number (微信支付订单号查询: a payer's receipt, a bill line names it)
        https://pay.weixin.qq.com/doc/v3/merchant/4012791858"""
        prefix = "/v3/pay/partner/transactions" if merchant.is_partner else "/v3/pay/transactions"
        path = f"{prefix}/id/{quote(transaction_id, safe='')}?{self._query_string(merchant)}"
        return transaction_notice(_json(self.call(merchant, "GET", path)))

    def close(self, merchant: Merchant, out_trade_no: str) -> None:
        prefix = "/v3/pay/partner/transactions" if merchant.is_partner else "/v3/pay/transactions"
        body = (
            {"sp_mchid": merchant.account_mchid, "sub_mchid": merchant.sub_mchid}
            if merchant.is_partner
            else {"mchid": merchant.account_mchid}
        )
        self.call(merchant, "POST", f"{prefix}/out-trade-no/{out_trade_no}/close", body)

    # -- refunds -----------------------------------------------------------------------

    def refund(self, merchant: Merchant, request: RefundRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "out_trade_no": request.out_trade_no,
            "out_refund_no": request.out_refund_no,
            "notify_url": merchant.notify_url,
            "amount": {"refund": request.refund_fen, "total": request.total_fen, "currency": "CNY"},
        }
        if request.reason:
            body["reason"] = request.reason[:80]
        if merchant.is_partner:
            body["sub_mchid"] = merchant.sub_mchid
        return _json(self.call(merchant, "POST", "/v3/refund/domestic/refunds", body))

    def query_refund(self, merchant: Merchant, out_refund_no: str) -> dict[str, Any]:
        query = f"?{urlencode({'sub_mchid': merchant.sub_mchid})}" if merchant.is_partner else ""
        return _json(self.call(merchant, "GET", f"/v3/refund/domestic/refunds/{out_refund_no}{query}"))

    def request_refund(self, merchant: Merchant, request: RefundRequest) -> RefundNotice:
        return refund_notice(self.refund(merchant, request))

    def refund_status(self, merchant: Merchant, out_refund_no: str) -> RefundNotice:
        return refund_notice(self.query_refund(merchant, out_refund_no))

    def apply_abnormal_refund(self, merchant: Merchant, refund_id: str, out_refund_no: str) -> RefundNotice:
        """发起异常退款: an ABNORMAL refund paid again, to the merchant's own bank account (``MERCHANT_BANK_CARD``).

        The other type (the payer's bank card) needs the payer's card number and
        name, which the ledger never holds.
        https://pay.weixin.qq.com/doc/v3/merchant/4013070426 (docs/wechatpay-protocol.md §4.5)
        """
        body: dict[str, Any] = {"out_refund_no": out_refund_no, "type": "MERCHANT_BANK_CARD"}
        if merchant.is_partner:
            body["sub_mchid"] = merchant.sub_mchid
        path = f"/v3/refund/domestic/refunds/{refund_id}/apply-abnormal-refund"
        return refund_notice(_json(self.call(merchant, "POST", path, body)))

    def pay_params(self, merchant: Merchant, prepay_id: str) -> dict[str, str]:
        return pay_params(merchant, prepay_id)

    def app_params(self, merchant: Merchant, prepay_id: str) -> dict[str, str]:
        return app_params(merchant, prepay_id)

    # -- bills and certificates ------------------------------------------------------------

    def trade_bill(self, merchant: Merchant, bill_date: date, gzip_file: bool = True) -> bytes:
        """The day's trade bill, downloaded and checked against WeChat's SHA1 (docs/wechatpay-protocol.md §4.7)."""
        params = {"bill_date": bill_date.isoformat(), "bill_type": "ALL"}
        if gzip_file:
            params["tar_type"] = "GZIP"
        if merchant.is_partner:
            params["sub_mchid"] = merchant.sub_mchid
        return self._bill(merchant, f"/v3/bill/tradebill?{urlencode(params)}", gzip_file)

    def fund_flow_bill(self, merchant: Merchant, bill_date: date) -> bytes:
        """The day's fund flow bill (资金账单) of the basic account, checked like the trade bill.

        https://pay.weixin.qq.com/doc/v3/merchant/4012791870 — an ordinary merchant's own; a service
        provider's sub-merchants have theirs encrypted under another API, not downloaded here.
        """
        if merchant.is_partner:
            raise MerchantConfigError(f"merchant {merchant.mchid}: a sub-merchant's fund flow bill is not downloaded")
        params = {"bill_date": bill_date.isoformat(), "account_type": "BASIC", "tar_type": "GZIP"}
        return self._bill(merchant, f"/v3/bill/fundflowbill?{urlencode(params)}", True)

    def _bill(self, merchant: Merchant, ticket_path: str, gzip_file: bool) -> bytes:
        ticket = self.call(merchant, "GET", ticket_path).json()
        # The file itself carries no signature; its SHA1 from the signed answer vouches for it.
        content = self.call(merchant, "GET", ticket["download_url"], verify=False).content
        if gzip_file:
            content = gzip.decompress(content)
        if hashlib.sha1(content).hexdigest() != str(ticket["hash_value"]).lower():  # noqa: S324 — WeChat's choice
            raise SignatureError("bill file does not match the SHA1 WeChat Pay gave for it")
        return content

    def download_certificates(self, merchant: Merchant) -> list[PlatformCertificate]:
        """Certificate mode: fetch, decrypt, then check the answer with what it delivered."""
        response = self.call(merchant, "GET", "/v3/certificates", verify=False)
        certificates = decrypt_certificates(response.json(), merchant.apiv3_key)
        known = {merchant.public_key_id: merchant.platform_public_key} if merchant.platform_public_key else {}
        PlatformKeys(known | {c.serial_no: c.public_key for c in certificates}).verify(
            response.headers, response.content
        )
        return certificates


def error_for(response: httpx.Response) -> WechatPayError:
    try:
        payload = response.json()
        code, message = str(payload.get("code", "")), str(payload.get("message", ""))
    except ValueError:
        code, message = "", response.text[:200]
    text = f"WeChat Pay answered {response.status_code} {code}: {message}".strip()
    status = response.status_code
    if status == 401:
        return SignatureError(text, code=code or "SIGN_ERROR", status=status)
    if status == 404:
        return WechatPayNotFound(text, code=code, status=status)
    if status == 429:
        return WechatPayRateLimited(text, code=code or "FREQUENCY_LIMITED", status=status)
    if status >= 500:
        return WechatPayUnavailable(text, code=code or "SYSTEM_ERROR", status=status)
    return WechatPayBusinessError(text, code=code, status=status)


def pay_params(merchant: Merchant, prepay_id: str) -> dict[str, str]:
    """``wx.requestPayment`` / JSAPI parameters; the appId must be the one the openid belongs to."""
    appid = merchant.payer_appid
    timestamp, nonce, package = str(int(time.time())), signing.new_nonce(), f"prepay_id={prepay_id}"
    return {
        "appId": appid,
        "timeStamp": timestamp,
        "nonceStr": nonce,
        "package": package,
        "signType": "RSA",
        "paySign": signing.jsapi_pay_sign(merchant.signing_certificate().private_key, appid, timestamp, nonce, package),
    }


def app_params(merchant: Merchant, prepay_id: str) -> dict[str, str]:
    appid = merchant.payer_appid
    timestamp, nonce = str(int(time.time())), signing.new_nonce()
    return {
        "appid": appid,
        "partnerid": merchant.mchid,
        "prepayid": prepay_id,
        "package": "Sign=WXPay",
        "noncestr": nonce,
        "timestamp": timestamp,
        "sign": signing.app_pay_sign(merchant.signing_certificate().private_key, appid, timestamp, nonce, prepay_id),
    }


def _json(response: httpx.Response) -> dict[str, Any]:
    """A verified answer's JSON object; anything else is not WeChat Pay's answer."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise WechatPayError(f"WeChat Pay answered {response.status_code} without a JSON object")
    return answer


class PlatformKeysBook(Mapping[str, PlatformKeys]):
    """WeChat's keys for each merchant, kept per account that signs (``account_mchid``): a provider's sub-merchants,
    however many, share the provider's one set — one download, one refresh (``scheduler.certificates``)."""

    def __init__(
        self,
        merchants: Mapping[str, Merchant],
        download: Callable[[Merchant], Any],
        refresh_claim: Callable[[str], bool] | None,
    ) -> None:
        self.merchants = merchants
        self.download = download
        self.refresh_claim = refresh_claim
        self._by_account: dict[str, PlatformKeys] = {}
        self._lock = threading.Lock()

    def __getitem__(self, mchid: str) -> PlatformKeys:
        merchant = self.merchants[mchid]
        keys = self._by_account.get(merchant.account_mchid)
        if keys is None:
            with self._lock:
                keys = self._by_account.get(merchant.account_mchid)
                if keys is None:
                    keys = self._by_account[merchant.account_mchid] = self._made(merchant)
        return keys

    def _made(self, merchant: Merchant) -> PlatformKeys:
        known = {merchant.public_key_id: merchant.platform_public_key} if merchant.platform_public_key else {}
        claim = partial(self.refresh_claim, merchant.account_mchid) if self.refresh_claim is not None else None
        return PlatformKeys(known, downloader=partial(self.download, merchant), claim=claim)

    def __iter__(self) -> Iterator[str]:
        return iter(self.merchants)

    def __len__(self) -> int:
        return len(self.merchants)

    def accounts(self) -> dict[str, str]:
        """One merchant id per account that signs: whose keys a refresh downloads."""
        return {self.merchants[m].account_mchid: m for m in self.merchants}
