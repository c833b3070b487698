"""``/sandbox/*``: the controls a test or a developer uses to play the payer, move time and misbehave."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox import native_mode1
from sandbox.clock import BEIJING, rfc3339
from sandbox.errors import WechatError, param_error
from sandbox.refunds import refund_json
from sandbox.service import Sandbox
from sandbox.transactions import COUPON_TYPES, transaction_json

SEEN_FIELDS = (
    "mchid",
    "appid",
    "sub_mchid",
    "sub_appid",
    "trade_type",
    "out_trade_no",
    "total",
    "openid",
    "payer_client_ip",
    "state",
)


def routes(sandbox: Sandbox) -> list[Route]:

    async def control_json(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            raise WechatError(400, "PARAM_ERROR", "body is not JSON") from None
        if not isinstance(data, dict):
            raise WechatError(400, "PARAM_ERROR", "body must be a JSON object")
        return data

    def control(handler: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(await handler(request))
            except WechatError as exc:
                return JSONResponse(exc.body(), status_code=exc.status)

        return endpoint

    async def sandbox_sub_merchants(request: Request) -> Any:
        """``{"sp_mchid", "sub_mchid", "sub_appids"}``: WeChat now knows this sub-merchant of the provider (进件)."""
        data = await control_json(request)
        appids = data.get("sub_appids", [])
        if not isinstance(appids, list) or not all(isinstance(a, str) for a in appids):
            raise param_error("sub_appids", "sub_appids is a list of appids", appids)
        return sandbox.register_sub_merchant(str(data.get("sp_mchid", "")), str(data.get("sub_mchid", "")), appids)

    async def sandbox_pay(request: Request) -> Any:
        data = await control_json(request)
        result = data.get("result", "SUCCESS")
        if result not in ("SUCCESS", "PAYERROR"):
            raise param_error("result", "result must be SUCCESS or PAYERROR", result)
        openid = data.get("openid") or "oSandboxPayer" + secrets.token_hex(8)
        for field in ("payer_total_fen", "total_fen"):
            if field in data and (isinstance(data[field], bool) or not isinstance(data[field], int) or data[field] < 0):
                raise param_error(field, f"{field} must be an integer number of fen", data[field])
        coupon = data.get("coupon")
        if coupon is not None:
            if "payer_total_fen" in data:
                raise param_error("coupon", "give a coupon or payer_total_fen, not both", coupon)
            if (
                not isinstance(coupon, dict)
                or coupon.get("type") not in COUPON_TYPES
                or isinstance(coupon.get("amount_fen"), bool)
                or not isinstance(coupon.get("amount_fen"), int)
                or coupon["amount_fen"] <= 0
            ):
                raise param_error("coupon", 'coupon is {"type": "CASH"|"NOCASH", "amount_fen": N > 0}', coupon)
        txn = sandbox.transactions.find_for_payer(data.get("out_trade_no"), data.get("code_url"), data.get("prepay_id"))
        return transaction_json(await asyncio.to_thread(pay, txn["key"], result, openid, data))

    def pay(txn_key: str, result: str, openid: str, data: dict[str, Any]) -> dict[str, Any]:
        txn = sandbox.transactions.pay(
            txn_key,
            result,
            openid,
            data.get("payer_total_fen"),
            data.get("total_fen"),
            bool(data.get("late", False)),
            data.get("coupon"),
        )
        if txn["state"] == "SUCCESS":
            sandbox.notify_payment(txn)
        return txn

    async def sandbox_scan(request: Request) -> Any:
        """Native mode 1: a payer scans a printed product code (and, with ``pay: true``, pays what it names)."""
        data = await control_json(request)
        code_url = data.get("code_url")
        if not isinstance(code_url, str):
            raise param_error("code_url", "code_url is the product code: weixin://wxpay/bizpayurl?…")
        openid = data.get("openid") or "oSandboxPayer" + secrets.token_hex(8)
        scanned = await asyncio.to_thread(native_mode1.scan, sandbox, code_url, openid)
        if scanned["accepted"] and data.get("pay"):
            result = data.get("result", "SUCCESS")
            if result not in ("SUCCESS", "PAYERROR"):
                raise param_error("result", "result must be SUCCESS or PAYERROR", result)
            txn = await asyncio.to_thread(pay, scanned["txn_key"], result, openid, data)
            scanned["transaction"] = transaction_json(txn)
        scanned.pop("txn_key", None)
        return scanned

    async def sandbox_faults(request: Request) -> Any:
        if request.method == "GET":
            return sandbox.faults()
        return sandbox.set_faults(await control_json(request))

    async def sandbox_order(request: Request) -> Any:
        """What the merchant sent for this out_trade_no, as WeChat keeps it (appid, trade type, payer IP, …)."""
        txn = sandbox.store.by_alias("transaction", f"otn:{request.path_params['out_trade_no']}")
        if txn is None:
            raise WechatError(404, "ORDER_NOT_EXIST", "订单不存在")
        return {k: v for k, v in txn.items() if k in SEEN_FIELDS}

    async def sandbox_notifications(request: Request) -> Any:
        return {"deliveries": sandbox.store.deliveries()}

    async def sandbox_clock(request: Request) -> Any:
        if request.method == "POST":
            seconds = (await control_json(request)).get("advance_seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                raise param_error("advance_seconds", "advance_seconds must be a non-negative number", seconds)
            sandbox.clock.advance(seconds)
        now = sandbox.clock.now()
        return {
            "now": rfc3339(now),
            "offset_seconds": sandbox.clock.offset_seconds,
            "beijing_date": str(now.astimezone(BEIJING).date()),
        }

    async def sandbox_refund(request: Request) -> Any:
        status = (await control_json(request)).get("status", "SUCCESS")
        if status not in ("SUCCESS", "CLOSED", "ABNORMAL"):
            raise param_error("status", "status must be SUCCESS, CLOSED or ABNORMAL", status)
        refund = sandbox.store.by_alias("refund", f"orn:{request.path_params['out_refund_no']}")
        if refund is None:
            raise WechatError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        if refund["status"] in ("SUCCESS", "CLOSED"):
            raise WechatError(409, "INVALID_REQUEST", f"refund is already {refund['status']}")
        return refund_json(await asyncio.to_thread(sandbox.settle_refund, refund, status))

    async def sandbox_rotate(request: Request) -> Any:
        """A new platform certificate, served beside the old ones and signing from now on."""
        serial = await asyncio.to_thread(sandbox.rotate_certificate)
        return {"serial_no": serial, "live": [c[2] for c in sandbox.certificates()]}

    async def sandbox_wx_login(request: Request) -> Any:
        """Plays ``wx.login`` in a mini-program: a single-use code, valid five minutes (``session_key``: the one
        WeChat will hand out for it, base64 of 16 bytes, so a test knows what to look for; random otherwise)."""
        data = await control_json(request)
        appid = data.get("appid", "")
        if sandbox.config.merchant_for_appid(appid) is None:
            raise param_error("appid", "unknown appid", appid)
        session_key = data.get("session_key") or base64.b64encode(secrets.token_bytes(16)).decode()
        code = secrets.token_urlsafe(24)
        sandbox.store.put(
            "wxcode",
            code,
            {
                "appid": appid,
                "openid": data.get("openid")
                or "o" + hashlib.sha256(f"{appid}{secrets.token_hex(4)}".encode()).hexdigest()[:27],
                "session_key": str(session_key),
                "expires_at": rfc3339(sandbox.clock.now() + timedelta(minutes=5)),
                "used": False,
            },
        )
        return {"code": code}

    async def sandbox_fund_flow(request: Request) -> Any:
        """A movement of the merchant's balance that is neither a payment nor a refund (赔付, 扣款…), now."""
        data = await control_json(request)
        mchid, kind, fen = data.get("mchid", ""), data.get("kind", "赔付"), data.get("fen")
        if mchid not in sandbox.config.merchants:
            raise param_error("mchid", "unknown mchid", mchid)
        if isinstance(fen, bool) or not isinstance(fen, int) or fen == 0:
            raise param_error("fen", "fen must be a non-zero integer (+ comes in, − goes out)", fen)
        if kind in ("交易", "退款", "手续费", "结算"):
            raise param_error("kind", "payments, refunds, fees and settlements move by themselves", kind)
        return await asyncio.to_thread(sandbox.add_fund_movement, mchid, str(kind), fen, str(data.get("note", "")))

    return [
        Route("/sandbox/fund-flow", control(sandbox_fund_flow), methods=["POST"]),
        Route("/sandbox/pay", control(sandbox_pay), methods=["POST"]),
        Route("/sandbox/sub-merchants", control(sandbox_sub_merchants), methods=["POST"]),
        Route("/sandbox/scan", control(sandbox_scan), methods=["POST"]),
        Route("/sandbox/faults", control(sandbox_faults), methods=["GET", "POST"]),
        Route("/sandbox/notifications", control(sandbox_notifications), methods=["GET"]),
        Route("/sandbox/orders/{out_trade_no}", control(sandbox_order), methods=["GET"]),
        Route("/sandbox/clock", control(sandbox_clock), methods=["GET", "POST"]),
        Route("/sandbox/refunds/{out_refund_no}", control(sandbox_refund), methods=["POST"]),
        Route("/sandbox/wx-login", control(sandbox_wx_login), methods=["POST"]),
        Route("/sandbox/certificates/rotate", control(sandbox_rotate), methods=["POST"]),
    ]
