"""WeChat Pay API v3's face: its paths, its request signatures, its signed answers and error bodies.

Requests are verified as WeChat verifies them (``Authorization`` over the raw
body, merchant certificate serial, ±300 s,
https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_0.shtml); every 2xx answer is
signed with the five ``Wechatpay-*`` headers (bill downloads aside).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

from cryptography import x509
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.wechatpay import signing
from sandbox.clock import BEIJING, rfc3339
from sandbox.config import SandboxMerchant
from sandbox.errors import WechatError, param_error
from sandbox.refunds import refund_json
from sandbox.service import Sandbox
from sandbox.transactions import transaction_json

Handler = Callable[[Request, SandboxMerchant, bytes], Awaitable[tuple[int, Any]]]
CHANNELS = ("jsapi", "native", "app", "h5")


def routes(sandbox: Sandbox) -> list[Route]:
    def wechat(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            try:
                merchant = await asyncio.to_thread(sandbox.authenticate, request, body)
                await asyncio.to_thread(sandbox.apply_endpoint_faults, request.url.path)
                status, payload = await handler(request, merchant, body)
            except WechatError as exc:
                return JSONResponse(
                    exc.body(), status_code=exc.status, headers={"Request-ID": request.state.request_id}
                )
            if isinstance(payload, Response):
                return payload
            return sandbox.signed(request, status, payload)

        return endpoint

    def json_body(body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise WechatError(400, "PARAM_ERROR", "请求体不是合法的JSON") from None
        if not isinstance(data, dict):
            raise WechatError(400, "PARAM_ERROR", "请求体必须是JSON对象")
        return data

    def sub_mchid_of(request: Request, merchant: SandboxMerchant, partner: bool) -> str:
        query = request.query_params
        if partner:
            if query.get("sp_mchid") != merchant.mchid:
                raise param_error("sp_mchid", "sp_mchid 与请求签名的商户号不一致", query.get("sp_mchid"), "query")
            sub = query.get("sub_mchid", "")
            if not sub:
                raise param_error("sub_mchid", "sub_mchid 必填", location="query")
            return sub
        if query.get("mchid") != merchant.mchid:
            raise param_error("mchid", "mchid 与请求签名的商户号不一致", query.get("mchid"), "query")
        return ""

    def prepay(partner: bool) -> Handler:
        async def handler(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
            channel = request.path_params["channel"]
            if channel not in CHANNELS:
                raise WechatError(404, "NOT_FOUND", "请求的资源不存在")
            data = json_body(body)
            return 200, await asyncio.to_thread(sandbox.transactions.prepay, merchant, channel, partner, data)

        return handler

    def query(partner: bool, by_id: bool) -> Handler:
        async def handler(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
            sub = sub_mchid_of(request, merchant, partner)
            if by_id:
                txn = sandbox.transactions.find_by_id(merchant, sub, request.path_params["id"])
            else:
                txn = sandbox.transactions.find(merchant, sub, request.path_params["out_trade_no"])
            return 200, transaction_json(txn)

        return handler

    def close(partner: bool) -> Handler:
        async def handler(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
            data = json_body(body)
            if partner:
                if data.get("sp_mchid") != merchant.mchid or not data.get("sub_mchid"):
                    raise param_error("sp_mchid", "sp_mchid 与请求签名的商户号不一致或缺少 sub_mchid")
                sub = str(data["sub_mchid"])
            else:
                if data.get("mchid") != merchant.mchid:
                    raise param_error("mchid", "mchid 与请求签名的商户号不一致", data.get("mchid"))
                sub = ""
            await asyncio.to_thread(sandbox.transactions.close, merchant, sub, request.path_params["out_trade_no"])
            return 204, None

        return handler

    async def create_refund(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
        data = json_body(body)
        refund = await asyncio.to_thread(sandbox.refunds.create, merchant, data, sandbox.faults(), sandbox.time_factor)
        return 200, refund_json(refund)

    async def apply_abnormal_refund(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
        refund = await asyncio.to_thread(
            sandbox.refunds.apply_abnormal,
            merchant,
            request.path_params["refund_id"],
            json_body(body),
            sandbox.faults(),
            sandbox.time_factor,
        )
        return 200, refund_json(refund)

    async def query_refund(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
        sub = request.query_params.get("sub_mchid", "")
        return 200, refund_json(sandbox.refunds.find(merchant, sub, request.path_params["out_refund_no"]))

    async def trade_bill(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
        query = request.query_params
        bill_date = _bill_date(query.get("bill_date", ""))
        bill_type = query.get("bill_type", "ALL")
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            raise param_error("bill_type", "bill_type 只支持 ALL、SUCCESS、REFUND", bill_type, "query")
        tar_type = query.get("tar_type")
        if tar_type not in (None, "GZIP"):
            raise param_error("tar_type", "tar_type 只支持 GZIP", tar_type, "query")
        now = sandbox.clock.now().astimezone(BEIJING)
        if bill_date < now.date() - timedelta(days=92):
            raise param_error("bill_date", "仅支持下载三个月内的账单", str(bill_date), "query")
        if not sandbox.bill_ready(bill_date):
            raise WechatError(400, "NO_STATEMENT_EXIST", "账单尚未生成，请于次日10点后下载")
        content = sandbox.bill(merchant.mchid, query.get("sub_mchid", ""), bill_date, bill_type)
        if content is None:
            raise WechatError(400, "NO_STATEMENT_EXIST", "当日无交易，账单不存在")
        return 200, _ticket(request, merchant, content, tar_type)

    async def fund_flow_bill(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
        """申请资金账单 (https://pay.weixin.qq.com/doc/v3/merchant/4012791870): the basic account's movements."""
        query = request.query_params
        bill_date = _bill_date(query.get("bill_date", ""))
        if query.get("account_type", "BASIC") != "BASIC":
            raise param_error("account_type", "沙箱只有基本账户 BASIC", query.get("account_type"), "query")
        tar_type = query.get("tar_type")
        if tar_type not in (None, "GZIP"):
            raise param_error("tar_type", "tar_type 只支持 GZIP", tar_type, "query")
        if not sandbox.bill_ready(bill_date):
            raise WechatError(400, "NO_STATEMENT_EXIST", "账单尚未生成，请于次日10点后下载")
        content = sandbox.fund_flow(merchant.mchid, bill_date)
        if content is None:
            raise WechatError(400, "NO_STATEMENT_EXIST", "当日无资金变动，账单不存在")
        return 200, _ticket(request, merchant, content, tar_type)

    def _bill_date(text: str) -> date:
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise param_error("bill_date", "bill_date 格式应为 yyyy-MM-DD", text, "query") from None

    def _ticket(request: Request, merchant: SandboxMerchant, content: bytes, tar_type: str | None) -> dict[str, str]:
        token = secrets.token_urlsafe(24)
        sandbox.store.put(
            "bill_token",
            token,
            {
                "mchid": merchant.mchid,
                "content": base64.b64encode(content).decode(),
                "tar_type": tar_type,
                "expires_at": time.time() + 300,
            },
        )
        base = str(request.base_url).rstrip("/")
        return {
            "hash_type": "SHA1",
            "hash_value": hashlib.sha1(content).hexdigest(),  # noqa: S324 — WeChat's choice
            "download_url": f"{base}/v3/billdownload/file?token={token}",
        }

    async def download_bill(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
        ticket = sandbox.store.get("bill_token", request.query_params.get("token", ""))
        if ticket is None or ticket["mchid"] != merchant.mchid or ticket["expires_at"] < time.time():
            raise WechatError(400, "INVALID_REQUEST", "下载链接已过期或无效，请重新申请")
        content = base64.b64decode(ticket["content"])
        if ticket["tar_type"] == "GZIP":
            content = gzip.compress(content)
        # Bill downloads are the one 2xx answer WeChat does not sign (docs/wechatpay-protocol.md §4.7).
        return 200, Response(
            content, media_type="application/octet-stream", headers={"Request-ID": request.state.request_id}
        )

    async def certificates(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
        if sandbox.config.mode == "public_key":
            raise WechatError(
                404, "RESOURCE_NOT_EXISTS", "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。"
            )
        data = []
        for _, pem, serial in sandbox.certificates():
            cert = x509.load_pem_x509_certificate(pem)
            nonce = secrets.token_hex(6)
            data.append(
                {
                    "serial_no": serial,
                    "effective_time": rfc3339(cert.not_valid_before_utc),
                    "expire_time": rfc3339(cert.not_valid_after_utc),
                    "encrypt_certificate": {
                        "algorithm": "AEAD_AES_256_GCM",
                        "nonce": nonce,
                        "associated_data": "certificate",
                        "ciphertext": signing.aead_encrypt(merchant.apiv3_key, nonce, "certificate", pem),
                    },
                }
            )
        return 200, {"data": data}

    return [
        Route("/v3/pay/transactions/out-trade-no/{out_trade_no}/close", wechat(close(False)), methods=["POST"]),
        Route("/v3/pay/partner/transactions/out-trade-no/{out_trade_no}/close", wechat(close(True)), methods=["POST"]),
        Route("/v3/pay/transactions/out-trade-no/{out_trade_no}", wechat(query(False, False)), methods=["GET"]),
        Route("/v3/pay/partner/transactions/out-trade-no/{out_trade_no}", wechat(query(True, False)), methods=["GET"]),
        Route("/v3/pay/transactions/id/{id}", wechat(query(False, True)), methods=["GET"]),
        Route("/v3/pay/partner/transactions/id/{id}", wechat(query(True, True)), methods=["GET"]),
        Route("/v3/pay/transactions/{channel}", wechat(prepay(False)), methods=["POST"]),
        Route("/v3/pay/partner/transactions/{channel}", wechat(prepay(True)), methods=["POST"]),
        Route("/v3/refund/domestic/refunds", wechat(create_refund), methods=["POST"]),
        Route("/v3/refund/domestic/refunds/{out_refund_no}", wechat(query_refund), methods=["GET"]),
        Route(
            "/v3/refund/domestic/refunds/{refund_id}/apply-abnormal-refund",
            wechat(apply_abnormal_refund),
            methods=["POST"],
        ),
        Route("/v3/bill/tradebill", wechat(trade_bill), methods=["GET"]),
        Route("/v3/bill/fundflowbill", wechat(fund_flow_bill), methods=["GET"]),
        Route("/v3/billdownload/file", wechat(download_bill), methods=["GET"]),
        Route("/v3/certificates", wechat(certificates), methods=["GET"]),
    ]
