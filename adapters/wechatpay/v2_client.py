"""The ledger's door to WeChat Pay API v2: XML over HTTPS, MD5 or HMAC-SHA256 (docs/wechatpay-protocol.md §6).

Every request carries a fresh ``nonce_str`` and its ``sign``; every answer
is parsed with ``defusedxml`` and its ``sign`` checked before a field of it
is believed (an answer with ``return_code=FAIL`` carries no business fields
and no sign).  Retried, as for v3, only what WeChat says may be retried:
``SYSTEMERROR``, ``BIZERR_NEED_RETRY``, ``FREQUENCY_LIMITED``, 5xx and
timeouts — with the same ``out_trade_no`` / ``out_refund_no``.  Refunds go
to ``/secapi/pay/refund`` over mutual TLS with the merchant's API
certificate (https://pay.weixin.qq.com/wiki/doc/api/jsapi.php?chapter=9_4).
"""

from __future__ import annotations

import gzip
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import date

import httpx

from adapters.wechatpay import evidence, v2_signing
from adapters.wechatpay.beijing import compact
from adapters.wechatpay.client import PrepayRequest, PrepayResult, RefundRequest
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
from adapters.wechatpay.retries import CallStats, Retry, endpoint_of
from adapters.wechatpay.v2_callbacks import v2_refund_notice, v2_transaction_notice
from domain.notices import RefundNotice, TransactionNotice

TRADE_TYPES = {"native": "NATIVE", "jsapi": "JSAPI", "miniprogram": "JSAPI", "app": "APP", "h5": "MWEB"}
RETRYABLE = ("SYSTEMERROR", "BIZERR_NEED_RETRY")
NOT_FOUND = ("ORDERNOTEXIST", "REFUNDNOTEXIST")
FILE_PATHS = ("/pay/downloadbill", "/pay/downloadfundflow")  # answers that are files: kept apart, not in the evidence
# downloadbill's answers when there is no file (yet): the same meaning as v3's NO_STATEMENT_EXIST
NO_BILL = ("No Bill Exist", "Bill Creating")


class WechatPayV2Client:
    def __init__(
        self,
        base_url: str,
        merchants: Mapping[str, Merchant],
        *,
        secapi_base_url: str | None = None,
        ca_file: str | None = None,
        http: httpx.Client | None = None,
        max_attempts: int = 4,
        backoff_seconds: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.secapi_base_url = (secapi_base_url or base_url).rstrip("/")
        self.book = merchants if isinstance(merchants, MerchantBook) else MerchantBook(merchants)
        self.merchants = self.book.on_api("v2")
        self.ca_file = ca_file
        self.http = http or httpx.Client(
            timeout=httpx.Timeout(10.0, connect=3.0), limits=httpx.Limits(max_connections=50), verify=self._context()
        )
        self._tls: dict[str, httpx.Client] = {}
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        self.stats = CallStats()

    def _context(self, merchant: Merchant | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if merchant is not None:
            if merchant.client_cert_file is None or merchant.client_key_file is None:
                raise MerchantConfigError(
                    f"merchant {merchant.mchid}: v2 refunds need `client_cert_file` and `client_key_file` "
                    "(the API certificate, apiclient_cert.pem and apiclient_key.pem)"
                )
            context.load_cert_chain(merchant.client_cert_file, merchant.client_key_file)
        return context

    def _client_with_certificate(self, merchant: Merchant) -> httpx.Client:
        client = self._tls.get(merchant.account_mchid)  # the API certificate is the account's (a provider's)
        if client is None:
            client = httpx.Client(timeout=httpx.Timeout(10.0, connect=3.0), verify=self._context(merchant))
            self._tls[merchant.account_mchid] = client
        return client

    def merchant(self, mchid: str) -> Merchant:
        try:
            return self.merchants[mchid]
        except KeyError:
            raise MerchantConfigError(f"merchant {mchid} is not configured") from None

    def close_http(self) -> None:
        self.http.close()
        for client in self._tls.values():
            client.close()

    # -- the one way to call WeChat -------------------------------------------------------

    def call(
        self, merchant: Merchant, path: str, params: dict[str, str], *, certificate: bool = False
    ) -> dict[str, str]:
        """Sign, post, verify; retry what may be retried; the verified fields of the answer."""
        return self._retry().run(
            lambda: self._answer(merchant, self._post(merchant, path, params, certificate)),
            lambda _: "SUCCESS",
            endpoint_of(path),
        )

    def _retry(self) -> Retry:
        return Retry(self.max_attempts, self.backoff_seconds, self.sleep, self.stats)

    def _request(self, merchant: Merchant, params: dict[str, str], sign_type: str | None = None) -> bytes:
        fields = self._ids(merchant) | params | {"nonce_str": v2_signing.new_nonce()}
        return v2_signing.to_xml(v2_signing.signed(fields, merchant.v2_key, sign_type or merchant.v2_sign_type))

    def _post(
        self, merchant: Merchant, path: str, params: dict[str, str], certificate: bool, sign_type: str | None = None
    ) -> httpx.Response:
        client = self._client_with_certificate(merchant) if certificate else self.http
        url = (self.secapi_base_url if certificate else self.base_url) + path
        request = self._request(merchant, params, sign_type)
        sending = evidence.Sending(endpoint_of(path), "POST", url, request)

        def kept(status: int, headers: Mapping[str, str], body: bytes, error: str) -> None:
            whole = path not in FILE_PATHS or body.lstrip().startswith(b"<xml>")
            evidence.keep(sending.answered(status, headers, body, error, keep_response=whole))

        try:
            response = client.post(
                url,
                content=request,
                headers={"Content-Type": "text/xml; charset=utf-8", "User-Agent": "zhangben/0.1 (+httpx)"},
            )
        except httpx.TimeoutException as exc:
            kept(0, {}, b"", f"timed out: {type(exc).__name__}")
            raise WechatPayUnavailable(f"WeChat Pay timed out: {type(exc).__name__}", code="TIMEOUT") from None
        except httpx.TransportError as exc:
            kept(0, {}, b"", f"unreachable: {exc}")
            raise WechatPayUnavailable(f"WeChat Pay unreachable: {exc}", code="UNREACHABLE") from None
        kept(response.status_code, response.headers, response.content, "")
        if response.status_code >= 500:
            raise WechatPayUnavailable(f"WeChat Pay answered {response.status_code}", status=response.status_code)
        if response.status_code != 200:
            raise WechatPayBusinessError(f"WeChat Pay answered {response.status_code}", status=response.status_code)
        return response

    def _answer(self, merchant: Merchant, response: httpx.Response) -> dict[str, str]:
        try:
            fields = v2_signing.parse_xml(response.content)
        except v2_signing.MalformedXml as exc:
            raise WechatPayError(f"WeChat Pay's answer is not its XML: {exc}") from None
        if fields.get("return_code") != "SUCCESS":
            raise _return_failure(fields.get("return_msg", ""))
        v2_signing.check(fields, merchant.v2_key, merchant.v2_sign_type)
        if fields.get("result_code") != "SUCCESS":
            raise _business_failure(fields.get("err_code", ""), fields.get("err_code_des", ""))
        return fields

    @staticmethod
    def _ids(merchant: Merchant) -> dict[str, str]:
        if not merchant.is_partner:
            return {"appid": merchant.appid, "mch_id": merchant.account_mchid}
        ids = {"appid": merchant.appid, "mch_id": merchant.account_mchid, "sub_mch_id": merchant.sub_mchid}
        if merchant.sub_appid:
            ids["sub_appid"] = merchant.sub_appid
        return ids

    # -- payments ---------------------------------------------------------------------------

    def prepay(self, merchant: Merchant, request: PrepayRequest) -> PrepayResult:
        """``/pay/unifiedorder``; ``time_expire`` in Beijing time, whatever the server's zone."""
        trade_type = TRADE_TYPES[request.channel]
        payer_openid, product_id = request.payer_openid, request.product_id
        params = {
            "body": request.description,
            "out_trade_no": request.out_trade_no,
            "total_fee": str(request.total_fen),
            "spbill_create_ip": request.client_ip,
            "notify_url": merchant.notify_url,
            "trade_type": trade_type,
            "time_expire": compact(request.time_expire),
        }
        if request.attach:
            params["attach"] = request.attach
        if trade_type == "NATIVE":
            params["product_id"] = product_id or request.out_trade_no[:32]
        if trade_type == "JSAPI":
            # a sub-merchant's own app knows its payers by sub_openid
            params["sub_openid" if merchant.is_partner and merchant.sub_appid else "openid"] = payer_openid or ""
        elif payer_openid and product_id:
            params["openid"] = payer_openid  # mode 1: the payer who scanned
        if trade_type == "MWEB":
            params["scene_info"] = '{"h5_info":{"type":"Wap","wap_url":"","wap_name":""}}'
        answer = self.call(merchant, "/pay/unifiedorder", params)
        prepay_id = answer.get("prepay_id", "")
        if trade_type == "NATIVE":
            return PrepayResult(prepay_id=prepay_id or None, code_url=answer["code_url"])
        if trade_type == "MWEB":
            return PrepayResult(prepay_id=prepay_id or None, h5_url=answer["mweb_url"])
        if trade_type == "APP":
            return PrepayResult(prepay_id=prepay_id, app_params=self.app_params(merchant, prepay_id))
        return PrepayResult(prepay_id=prepay_id, pay_params=self.pay_params(merchant, prepay_id))

    def transaction(self, merchant: Merchant, out_trade_no: str) -> TransactionNotice:
        return v2_transaction_notice(self.call(merchant, "/pay/orderquery", {"out_trade_no": out_trade_no}))

    def transaction_by_id(self, merchant: Merchant, transaction_id: str) -> TransactionNotice:
        """``orderquery`` by ``transaction_id`` (it takes either number:
        https://pay.weixin.qq.com/wiki/doc/api/native.php?chapter=9_2)."""
        return v2_transaction_notice(self.call(merchant, "/pay/orderquery", {"transaction_id": transaction_id}))

    def close(self, merchant: Merchant, out_trade_no: str) -> None:
        self.call(merchant, "/pay/closeorder", {"out_trade_no": out_trade_no})

    def pay_params(self, merchant: Merchant, prepay_id: str) -> dict[str, str]:
        return v2_signing.jsapi_pay_params(merchant.payer_appid, prepay_id, merchant.v2_key, merchant.v2_sign_type)

    def app_params(self, merchant: Merchant, prepay_id: str) -> dict[str, str]:
        return v2_signing.app_pay_params(
            merchant.payer_appid, merchant.mchid, prepay_id, merchant.v2_key, merchant.v2_sign_type
        )

    # -- refunds ------------------------------------------------------------------------------

    def request_refund(self, merchant: Merchant, request: RefundRequest) -> RefundNotice:
        """``/secapi/pay/refund`` with the client certificate; WeChat answers "accepted", the result follows."""
        out_trade_no, out_refund_no = request.out_trade_no, request.out_refund_no
        params = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "total_fee": str(request.total_fen),
            "refund_fee": str(request.refund_fen),
            "notify_url": merchant.refund_notify_url or merchant.notify_url,
        }
        if request.reason:
            params["refund_desc"] = request.reason[:80]
        answer = self.call(merchant, "/secapi/pay/refund", params, certificate=True)
        return RefundNotice(
            out_refund_no=answer.get("out_refund_no", out_refund_no),
            out_trade_no=answer.get("out_trade_no", out_trade_no),
            refund_id=answer.get("refund_id", ""),
            status="PROCESSING",
            refund_fen=int(answer["refund_fee"]) if answer.get("refund_fee", "").isdigit() else None,
            success_time=None,
            user_received_account="",
        )

    def refund_status(self, merchant: Merchant, out_refund_no: str) -> RefundNotice:
        """``/pay/refundquery``: the ``_$n`` fields of the refund asked for."""
        answer = self.call(merchant, "/pay/refundquery", {"out_refund_no": out_refund_no})
        listed = answer.get("refund_count", "")
        for n in range(int(listed) if listed.isdigit() else 0):
            if answer.get(f"out_refund_no_{n}") == out_refund_no:
                return v2_refund_notice(answer, f"_{n}")
        raise WechatPayNotFound(f"refundquery did not list {out_refund_no}", code="REFUNDNOTEXIST")

    # -- bills ------------------------------------------------------------------------------------

    def trade_bill(self, merchant: Merchant, bill_date: date, gzip_file: bool = True) -> bytes:
        """``/pay/downloadbill``: the bill as text on success, an XML ``FAIL`` otherwise (unsigned either way)."""
        params = {"bill_date": bill_date.strftime("%Y%m%d"), "bill_type": "ALL"}
        if gzip_file:
            params["tar_type"] = "GZIP"
        response = self._retry().run(
            lambda: self._post(merchant, "/pay/downloadbill", params, certificate=False), lambda _: "200", "bill"
        )
        return self._bill_file(response.content, gzip_file)

    def fund_flow_bill(self, merchant: Merchant, bill_date: date) -> bytes:
        """``/pay/downloadfundflow``: the basic account's fund flow bill (资金账单), over mutual TLS and signed with
        HMAC-SHA256 whatever the merchant's sign type (https://pay.weixin.qq.com/wiki/doc/api/jsapi.php?chapter=9_18)."""
        if merchant.is_partner:
            raise MerchantConfigError(f"merchant {merchant.mchid}: a sub-merchant's fund flow bill is not downloaded")
        params = {"bill_date": bill_date.strftime("%Y%m%d"), "account_type": "Basic", "tar_type": "GZIP"}
        response = self._retry().run(
            lambda: self._post(merchant, "/pay/downloadfundflow", params, True, v2_signing.HMAC_SHA256),
            lambda _: "200",
            "bill",
        )
        return self._bill_file(response.content, True)

    @staticmethod
    def _bill_file(content: bytes, gzip_file: bool) -> bytes:
        if content.lstrip().startswith(b"<xml>"):
            fields = v2_signing.parse_xml(content)
            message = fields.get("return_msg") or fields.get("err_code_des") or ""
            if message in NO_BILL or fields.get("err_code") in ("20002",):
                raise WechatPayBusinessError(f"WeChat Pay: {message}", code="NO_STATEMENT_EXIST")
            raise WechatPayBusinessError(f"WeChat Pay refused the bill: {message}", code=fields.get("err_code", ""))
        return gzip.decompress(content) if gzip_file else content


def _return_failure(message: str) -> WechatPayError:
    """``return_code=FAIL``: the request itself was not accepted (signature, format, a busy system)."""
    text = f"WeChat Pay refused the request: {message}"
    if "签名" in message or "SIGN" in message.upper():
        return SignatureError(text, code="SIGNERROR")
    if "系统" in message or "SYSTEM" in message.upper():
        return WechatPayUnavailable(text, code="SYSTEMERROR")
    return WechatPayBusinessError(text, code="FAIL")


def _business_failure(code: str, message: str) -> WechatPayError:
    text = f"WeChat Pay answered {code}: {message}"
    if code in RETRYABLE:
        return WechatPayUnavailable(text, code=code)
    if code == "FREQUENCY_LIMITED":
        return WechatPayRateLimited(text, code=code)
    if code in NOT_FOUND:
        return WechatPayNotFound(text, code=code)
    return WechatPayBusinessError(text, code=code)
