"""WeChat Pay API v2's face: XML in, signed XML out (docs/wechatpay-protocol.md §6).

Every request is checked as WeChat checks it: well-formed XML, a known
``mch_id``, an ``appid`` that belongs to it, and ``sign`` (MD5 or
HMAC-SHA256, as ``sign_type`` says) over the raw key/value map.  A request
that fails there gets ``return_code=FAIL`` with ``return_msg`` and no sign; a
business failure gets ``result_code=FAIL`` with ``err_code``/``err_code_des``,
signed, like every other answer.  ``/secapi/*`` (refunds) is served only on
the TLS listener that demands the merchant's API certificate
(https://pay.weixin.qq.com/wiki/doc/api/jsapi.php?chapter=9_4); bills come
back as text, unsigned, or as an XML ``FAIL`` (``No Bill Exist``, ``Bill Creating``).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.wechatpay import v2_signing
from adapters.wechatpay.errors import SignatureError
from sandbox import v2_messages
from sandbox.clock import BEIJING
from sandbox.config import SandboxMerchant
from sandbox.errors import WechatError
from sandbox.service import Sandbox
from sandbox.v2_messages import ERR_CODES, V2Failure, require

Params = dict[str, str]
Handler = Callable[[Params, SandboxMerchant], Awaitable["Params | Response"]]
# Changes every retry, so not part of "the same request again"
VOLATILE = ("nonce_str", "sign")


def _xml(fields: Params) -> Response:
    return Response(v2_signing.to_xml(fields), media_type="application/xml")


def _return_fail(message: str) -> Response:
    return _xml({"return_code": "FAIL", "return_msg": message})


def routes(sandbox: Sandbox, *, secapi: bool) -> list[Route]:
    """The v2 endpoints; ``secapi`` adds ``/secapi/pay/refund`` (the mutual-TLS listener only)."""

    def wechat(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                params = v2_signing.parse_xml(await request.body())
            except v2_signing.MalformedXml:
                return _return_fail("XML格式错误")
            merchant = sandbox.config.merchants.get(params.get("mch_id", ""))
            if merchant is None or not merchant.v2_key:
                return _return_fail("mch_id参数错误或商户号不存在")
            try:
                v2_signing.check(params, merchant.v2_key)
            except SignatureError:
                return _return_fail("签名错误")
            if not params.get("nonce_str"):
                return _return_fail("缺少参数nonce_str")
            sign_type = params.get("sign_type") or v2_signing.MD5
            try:
                if params.get("appid") not in merchant.appids:
                    raise V2Failure("APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
                await asyncio.to_thread(sandbox.apply_endpoint_faults, request.url.path)
                result = await handler(params, merchant)
            except V2Failure as failure:
                result = {"result_code": "FAIL", "err_code": failure.err_code, "err_code_des": failure.err_code_des}
            except WechatError as exc:
                code = ERR_CODES.get(exc.code, exc.code)
                result = {"result_code": "FAIL", "err_code": code, "err_code_des": exc.message}
            if isinstance(result, Response):
                return result
            answer = _ids(params) | {"return_code": "SUCCESS", "return_msg": "OK", "nonce_str": v2_signing.new_nonce()}
            answer |= {"result_code": "SUCCESS"} | result
            return _xml(v2_signing.signed(answer, merchant.v2_key, sign_type))

        return endpoint

    async def unifiedorder(params: Params, merchant: SandboxMerchant) -> Params:
        fields, channel = v2_messages.unifiedorder_fields(merchant, params, sandbox.clock.now())
        request = {k: v for k, v in params.items() if k not in VOLATILE}
        txn = await asyncio.to_thread(sandbox.transactions.open, fields, request, channel)
        return v2_messages.prepay_answer(txn)

    def _transaction(params: Params, merchant: SandboxMerchant) -> dict[str, Any]:
        sub = params.get("sub_mch_id", "")
        if params.get("transaction_id"):
            return sandbox.transactions.find_by_id(merchant, sub, params["transaction_id"])
        if params.get("out_trade_no"):
            return sandbox.transactions.find(merchant, sub, params["out_trade_no"])
        raise V2Failure("LACK_PARAMS", "transaction_id和out_trade_no必须二选一")

    async def orderquery(params: Params, merchant: SandboxMerchant) -> Params:
        return v2_messages.orderquery_answer(_transaction(params, merchant))

    async def closeorder(params: Params, merchant: SandboxMerchant) -> Params:
        require(params, "out_trade_no")
        await asyncio.to_thread(
            sandbox.transactions.close, merchant, params.get("sub_mch_id", ""), params["out_trade_no"]
        )
        return {}

    async def refund(params: Params, merchant: SandboxMerchant) -> Params:
        require(params, "out_refund_no", "total_fee", "refund_fee")
        body: dict[str, Any] = {
            "out_refund_no": params["out_refund_no"],
            "amount": {
                "refund": v2_messages.fen(params, "refund_fee"),
                "total": v2_messages.fen(params, "total_fee"),
            },
            "reason": params.get("refund_desc", ""),
            "sub_mchid": params.get("sub_mch_id", ""),
        }
        for name in ("transaction_id", "out_trade_no", "notify_url"):
            if params.get(name):
                body[name] = params[name]
        created = await asyncio.to_thread(
            sandbox.refunds.create, merchant, body, sandbox.faults(), sandbox.time_factor, "v2"
        )
        return v2_messages.refund_answer(created)

    async def refundquery(params: Params, merchant: SandboxMerchant) -> Params:
        sub = params.get("sub_mch_id", "")
        try:
            if params.get("out_refund_no"):
                txn_key = sandbox.refunds.find(merchant, sub, params["out_refund_no"])["txn_key"]
            elif params.get("refund_id"):
                found = sandbox.store.by_alias("refund", f"rid:{params['refund_id']}")
                if found is None or found["mchid"] != merchant.mchid:
                    raise V2Failure("REFUNDNOTEXIST", "退款订单查询失败")
                txn_key = found["txn_key"]
            else:
                txn_key = _transaction(params, merchant)["key"]
        except WechatError:
            raise V2Failure("REFUNDNOTEXIST", "退款订单查询失败") from None
        txn = sandbox.store.get("transaction", txn_key)
        refunds = [r for r in sandbox.store.all("refund") if r["txn_key"] == txn_key]
        if txn is None or not refunds:
            raise V2Failure("REFUNDNOTEXIST", "退款订单查询失败")
        return v2_messages.refundquery_answer(txn, sorted(refunds, key=lambda r: r["create_time"]))

    async def downloadbill(params: Params, merchant: SandboxMerchant) -> Response:
        bill_type = params.get("bill_type", "ALL")
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            return _return_fail("invalid bill_type")
        try:
            bill_date = datetime.strptime(params.get("bill_date", ""), "%Y%m%d").date()
        except ValueError:
            return _return_fail("invalid bill_date")
        if params.get("tar_type", "GZIP") != "GZIP":
            return _return_fail("invalid tar_type")
        if not sandbox.bill_ready(bill_date):
            # the day is over but its file is still being made; a day not over yet has no bill
            today = sandbox.clock.now().astimezone(BEIJING).date()
            return _return_fail("Bill Creating" if bill_date < today else "No Bill Exist")
        content = await asyncio.to_thread(
            sandbox.bill, merchant.mchid, params.get("sub_mch_id", ""), bill_date, bill_type
        )
        if content is None:
            return _return_fail("No Bill Exist")
        if params.get("tar_type") == "GZIP":
            return Response(gzip.compress(content), media_type="application/zip")
        return Response(content, media_type="text/plain; charset=utf-8")

    async def downloadfundflow(params: Params, merchant: SandboxMerchant) -> Response:
        """下载资金账单: mutual TLS, HMAC-SHA256 only (https://pay.weixin.qq.com/wiki/doc/api/jsapi.php?chapter=9_18)."""
        if params.get("sign_type") != v2_signing.HMAC_SHA256:
            return _return_fail("sign_type must be HMAC-SHA256")
        if params.get("account_type") != "Basic":
            return _return_fail("invalid account_type")
        try:
            bill_date = datetime.strptime(params.get("bill_date", ""), "%Y%m%d").date()
        except ValueError:
            return _return_fail("invalid bill_date")
        if not sandbox.bill_ready(bill_date):
            today = sandbox.clock.now().astimezone(BEIJING).date()
            return _return_fail("Bill Creating" if bill_date < today else "No Bill Exist")
        content = await asyncio.to_thread(sandbox.fund_flow, merchant.mchid, bill_date)
        if content is None:
            return _return_fail("No Bill Exist")
        if params.get("tar_type") == "GZIP":
            return Response(gzip.compress(content), media_type="application/zip")
        return Response(content, media_type="text/plain; charset=utf-8")

    table = [
        Route("/pay/unifiedorder", wechat(unifiedorder), methods=["POST"]),
        Route("/pay/orderquery", wechat(orderquery), methods=["POST"]),
        Route("/pay/closeorder", wechat(closeorder), methods=["POST"]),
        Route("/pay/refundquery", wechat(refundquery), methods=["POST"]),
        Route("/pay/downloadbill", wechat(downloadbill), methods=["POST"]),
    ]
    if secapi:
        table.append(Route("/secapi/pay/refund", wechat(refund), methods=["POST"]))
        table.append(Route("/pay/downloadfundflow", wechat(downloadfundflow), methods=["POST"]))
    return table


def _ids(params: Params) -> Params:
    return {k: params[k] for k in ("appid", "mch_id", "sub_mch_id", "sub_appid") if params.get(k)}
