"""The sandbox's HTTP face: WeChat Pay's v3 paths, its signatures, its error bodies.

Requests are verified as WeChat verifies them (``Authorization`` over the raw
body, merchant certificate serial, ±300 s); every 2xx answer is signed with
the five ``Wechatpay-*`` headers (bill downloads aside).  ``/sandbox/…`` holds
the controls a test or a developer uses to play the payer and to misbehave.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import logging
import random
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.wechatpay import signing
from sandbox.bills import bill_rows, render_bill
from sandbox.clock import BEIJING, SandboxClock, rfc3339
from sandbox.config import SandboxConfig, SandboxMerchant
from sandbox.errors import FAULT_STATUS, WechatError, param_error
from sandbox.refunds import Refunds, refund_json, refund_notice_json
from sandbox.store import SandboxStore
from sandbox.transactions import Transactions, transaction_json

log = logging.getLogger("zhangben.sandbox")

Handler = Callable[[Request, SandboxMerchant, bytes], Awaitable[tuple[int, Any]]]
CHANNELS = ("jsapi", "native", "app", "h5")
FAULT_KEYS = {
    "notifications",
    "duplicate_count",
    "notification_delay_seconds",
    "signtest_probe",
    "endpoints",
    "time_factor",
    "refund_result",
    "refund_delay_seconds",
    "refund_balance_fen",
}


class Sandbox:
    """The state and the background work behind the routes."""

    def __init__(self, config: SandboxConfig, store: SandboxStore | None = None) -> None:
        from sandbox.notifier import Notifier

        self.config = config
        self.store = store or SandboxStore(config.database)
        self.clock = SandboxClock(self.store)
        self.transactions = Transactions(config, self.store, self.clock)
        self.refunds = Refunds(self.store, self.clock, self.transactions)
        self.notifier = Notifier(
            config, self.store, self.clock, certificate=lambda: (self.certificates()[-1][0], self.certificates()[-1][2])
        )
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    # -- faults ------------------------------------------------------------------------

    def faults(self) -> dict[str, Any]:
        return self.store.get("kv", "faults") or {}

    def set_faults(self, update: dict[str, Any]) -> dict[str, Any]:
        if update.get("reset"):
            self.store.put("kv", "faults", {})
            update = {k: v for k, v in update.items() if k != "reset"}
        unknown = set(update) - FAULT_KEYS
        if unknown:
            raise param_error(sorted(unknown)[0], f"unknown fault setting: {', '.join(sorted(unknown))}")
        _check_faults(update)
        faults = self.faults() | update
        self.store.put("kv", "faults", faults)
        return faults

    @property
    def time_factor(self) -> float:
        return float(self.faults().get("time_factor", 1)) or 1.0

    # -- notifications -------------------------------------------------------------------

    def notify_payment(self, txn: dict[str, Any]) -> None:
        self.notifier.enqueue(
            txn["mchid"],
            txn["notify_url"],
            "TRANSACTION.SUCCESS",
            "transaction",
            transaction_json(txn),
            {"out_trade_no": txn["out_trade_no"]},
            self.faults(),
        )

    def settle_refund(self, refund: dict[str, Any], status: str) -> dict[str, Any]:
        with self.store.transaction():
            refund = self.refunds.settle(refund, status)
            self.notifier.enqueue(
                refund["mchid"],
                refund["notify_url"],
                f"REFUND.{status}",
                "refund",
                refund_notice_json(refund),
                {"out_trade_no": refund["out_trade_no"], "out_refund_no": refund["out_refund_no"]},
                self.faults(),
            )
        return refund

    # -- background -----------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._worker = threading.Thread(target=self._run, name="sandbox-worker", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                for refund in self.refunds.due():
                    self.settle_refund(refund, refund["next_status"])
                self.notifier.tick()
            except Exception:  # keep the sandbox alive; the log says what broke
                log.exception("sandbox worker")

    def stop(self) -> None:
        self._stop.set()
        if self._worker:
            self._worker.join(timeout=2)
        self.notifier.close()

    # -- request verification and response signing -------------------------------------------

    def authenticate(self, request: Request, body: bytes) -> SandboxMerchant:
        header = request.headers.get("authorization", "")
        try:
            auth = signing.parse_authorization(header)
        except signing.SignatureError:
            raise WechatError(
                401, "SIGN_ERROR", "Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》"
            ) from None
        merchant = self.config.merchants.get(auth.mchid)
        if merchant is None:
            raise WechatError(400, "MCH_NOT_EXISTS", "商户号不存在")
        if auth.serial_no.upper() != merchant.cert_serial:
            raise WechatError(401, "SIGN_ERROR", "商户证书序列号有误。")
        if (
            not (auth.timestamp.isdigit() and len(auth.timestamp) == 10)
            or abs(time.time() - int(auth.timestamp)) > signing.TIMESTAMP_WINDOW_SECONDS
        ):
            raise WechatError(401, "SIGN_ERROR", "Http头Authorization中的timestamp与发起请求的时间不得超过5分钟")
        url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        message = signing.request_message(request.method, url, auth.timestamp, auth.nonce_str, body)
        if not signing.verify(merchant.public_key, message, auth.signature):
            raise WechatError(
                401,
                "SIGN_ERROR",
                "签名错误,请检查后再试",
                {
                    "detail": {"issue": "sign not match"},
                    "field": "signature",
                    "location": "authorization",
                    "sign_information": {
                        "method": request.method,
                        "sign_message_length": len(message),
                        "truncated_sign_message": message[:64].decode(errors="replace"),
                        "url": url,
                    },
                },
            )
        return merchant

    def signed(self, request: Request, status: int, payload: Any) -> Response:
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        key, serial = self._signing_key(request)
        timestamp, nonce = str(int(time.time())), signing.new_nonce()
        headers = {
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signing.sign(key, signing.response_message(timestamp, nonce, body)),
            "Wechatpay-Serial": serial,
            "Wechatpay-Signature-Type": signing.SCHEMA,
            "Request-ID": request.state.request_id,
        }
        media = "application/json" if body else None
        return Response(body, status_code=status, headers=headers, media_type=media)

    def _signing_key(self, request: Request) -> tuple[Any, str]:
        """Public-key or certificate signing, as the mode says; in ``both``, as the request asks."""
        mode = self.config.mode
        asked = request.headers.get("wechatpay-serial", "")
        if mode == "public_key" or (mode == "both" and asked.startswith("PUB_KEY_ID_")):
            return self.config.public_key_private, self.config.public_key_id
        key, _, serial = self.certificates()[-1]
        return key, serial

    def apply_endpoint_faults(self, path: str) -> None:
        endpoints = self.faults().get("endpoints") or {}
        matches = [p for p in endpoints if path.startswith(p)]
        if not matches:
            return
        prefix = max(matches, key=len)
        fault = endpoints[prefix]
        if fault.get("latency_ms"):
            time.sleep(float(fault["latency_ms"]) / 1000)
        if "count" in fault and not self._take_one(prefix):
            return
        if random.random() < float(fault.get("error_rate", 0)):
            code = fault.get("error_code", "SYSTEM_ERROR")
            status, message = FAULT_STATUS.get(code, (500, "系统繁忙,请稍后重试"))
            raise WechatError(status, code, message)

    def _take_one(self, prefix: str) -> bool:
        """A fault with a ``count`` fires that many times, then is gone."""
        with self.store.transaction():
            faults = self.faults()
            fault = faults.get("endpoints", {}).get(prefix)
            if not fault or int(fault.get("count", 0)) <= 0:
                return False
            fault["count"] = int(fault["count"]) - 1
            self.store.put("kv", "faults", faults)
            return True

    # -- platform certificates (several live at once during a rotation) ----------------------

    def certificates(self) -> list[tuple[Any, bytes, str]]:
        """(private key, certificate PEM, serial), oldest first; the newest signs."""
        rotated = [
            (signing.load_private_key(base64.b64decode(c["key"])), base64.b64decode(c["cert"]), c["serial"])
            for c in (self.store.get("kv", "rotated_certificates") or {}).get("items", [])
        ]
        return [(self.config.platform_key, self.config.platform_cert_pem, self.config.platform_serial), *rotated]

    def rotate_certificate(self) -> str:
        from sandbox.keyset import new_certificate

        key_pem, cert_pem, serial = new_certificate("Tenpay.com Root CA (sandbox, rotated)")
        with self.store.transaction():
            items = (self.store.get("kv", "rotated_certificates") or {}).get("items", [])
            items.append(
                {
                    "key": base64.b64encode(key_pem).decode(),
                    "cert": base64.b64encode(cert_pem).decode(),
                    "serial": serial,
                }
            )
            self.store.put("kv", "rotated_certificates", {"items": items})
        return serial


def _check_faults(update: dict[str, Any]) -> None:
    if "notifications" in update and update["notifications"] not in ("deliver", "drop", "duplicate"):
        raise param_error("notifications", "notifications must be deliver, drop or duplicate")
    if "refund_result" in update and update["refund_result"] not in ("SUCCESS", "CLOSED", "ABNORMAL", "PROCESSING"):
        raise param_error("refund_result", "refund_result must be SUCCESS, CLOSED, ABNORMAL or PROCESSING")
    for key in ("time_factor", "duplicate_count", "notification_delay_seconds", "refund_delay_seconds"):
        if key in update and (
            isinstance(update[key], bool)
            or not isinstance(update[key], int | float)
            or update[key] < 0
            or (key == "time_factor" and update[key] == 0)
        ):
            raise param_error(key, f"{key} must be a non-negative number")
    endpoints = update.get("endpoints", {})
    if not isinstance(endpoints, dict) or not all(isinstance(v, dict) for v in endpoints.values()):
        raise param_error("endpoints", "endpoints maps a path prefix to {error_rate, latency_ms, error_code}")
    for prefix, fault in endpoints.items():
        count = fault.get("count", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise param_error(f"endpoints/{prefix}/count", "count must be a non-negative integer")
        rate = fault.get("error_rate", 0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise param_error(f"endpoints/{prefix}/error_rate", "error_rate must be from 0 to 1")


def build_app(sandbox: Sandbox, *, run_worker: bool = True) -> Starlette:
    """The ASGI application; ``run_worker`` starts refund progress and notification delivery."""

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

    async def query_refund(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
        sub = request.query_params.get("sub_mchid", "")
        return 200, refund_json(sandbox.refunds.find(merchant, sub, request.path_params["out_refund_no"]))

    async def trade_bill(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
        query = request.query_params
        try:
            bill_date = date.fromisoformat(query.get("bill_date", ""))
        except ValueError:
            raise param_error("bill_date", "bill_date 格式应为 yyyy-MM-DD", query.get("bill_date"), "query") from None
        bill_type = query.get("bill_type", "ALL")
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            raise param_error("bill_type", "bill_type 只支持 ALL、SUCCESS、REFUND", bill_type, "query")
        tar_type = query.get("tar_type")
        if tar_type not in (None, "GZIP"):
            raise param_error("tar_type", "tar_type 只支持 GZIP", tar_type, "query")
        now = sandbox.clock.now().astimezone(BEIJING)
        if bill_date < now.date() - timedelta(days=92):
            raise param_error("bill_date", "仅支持下载三个月内的账单", str(bill_date), "query")
        # The day's bill is generated from 09:00 the next day; it can be downloaded from 10:00.
        ready_at = datetime.combine(bill_date + timedelta(days=1), datetime.min.time(), BEIJING) + timedelta(hours=10)
        if now < ready_at:
            raise WechatError(400, "NO_STATEMENT_EXIST", "账单尚未生成，请于次日10点后下载")
        sub = query.get("sub_mchid", "")
        transactions = [
            t
            for t in sandbox.store.all("transaction")
            if t["mchid"] == merchant.mchid and (not sub or t["sub_mchid"] == sub)
        ]
        keys = {t["key"] for t in transactions}
        refunds = [r for r in sandbox.store.all("refund") if r["txn_key"] in keys]
        rows = bill_rows(bill_date, transactions, refunds, bill_type)
        if not rows:
            raise WechatError(400, "NO_STATEMENT_EXIST", "当日无交易，账单不存在")
        content = render_bill(rows)
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
        return 200, {
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
        # Bill downloads are the one 2xx answer WeChat does not sign (spec §4.7).
        return 200, Response(
            content, media_type="application/octet-stream", headers={"Request-ID": request.state.request_id}
        )

    async def certificates(request: Request, merchant: SandboxMerchant, body: bytes) -> tuple[int, Any]:
        if sandbox.config.mode == "public_key":
            raise WechatError(
                404, "RESOURCE_NOT_EXISTS", "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。"
            )
        from cryptography import x509

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

    # -- mini-program login (api.weixin.qq.com, plain JSON, errcodes) --------------------------

    async def jscode2session(request: Request) -> Response:
        q = request.query_params
        for name, code in (("appid", 41002), ("secret", 41004), ("js_code", 41008)):
            if not q.get(name):
                return JSONResponse({"errcode": code, "errmsg": f"{name} missing"})
        found = sandbox.config.merchant_for_appid(q["appid"])
        if found is None:
            return JSONResponse({"errcode": 40013, "errmsg": "invalid appid"})
        if found[1] != q["secret"]:
            return JSONResponse({"errcode": 40125, "errmsg": "invalid appsecret"})
        with sandbox.store.transaction():
            login = sandbox.store.get("wxcode", q["js_code"])
            if login is None or login["appid"] != q["appid"]:
                return JSONResponse({"errcode": 40029, "errmsg": "invalid code"})
            if login["used"]:
                return JSONResponse({"errcode": 40163, "errmsg": "code been used"})
            if sandbox.clock.now() > datetime.fromisoformat(login["expires_at"]):
                return JSONResponse({"errcode": 40029, "errmsg": "invalid code (expired)"})
            login["used"] = True
            sandbox.store.put("wxcode", q["js_code"], login)
        return JSONResponse({"openid": login["openid"], "session_key": login["session_key"]})

    # -- /sandbox controls ----------------------------------------------------------------------

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

    async def sandbox_pay(request: Request) -> Any:
        data = await control_json(request)
        result = data.get("result", "SUCCESS")
        if result not in ("SUCCESS", "PAYERROR"):
            raise param_error("result", "result must be SUCCESS or PAYERROR", result)
        openid = data.get("openid") or "oSandboxPayer" + secrets.token_hex(8)
        for field in ("payer_total_fen", "total_fen"):
            if field in data and (isinstance(data[field], bool) or not isinstance(data[field], int) or data[field] < 0):
                raise param_error(field, f"{field} must be an integer number of fen", data[field])
        txn = sandbox.transactions.find_for_payer(data.get("out_trade_no"), data.get("code_url"))
        txn = await asyncio.to_thread(
            sandbox.transactions.pay,
            txn["key"],
            result,
            openid,
            data.get("payer_total_fen"),
            data.get("total_fen"),
            bool(data.get("late", False)),
        )
        if txn["state"] == "SUCCESS":
            sandbox.notify_payment(txn)
        return transaction_json(txn)

    async def sandbox_faults(request: Request) -> Any:
        if request.method == "GET":
            return sandbox.faults()
        return sandbox.set_faults(await control_json(request))

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
        """Plays ``wx.login`` in a mini-program: a single-use code, valid five minutes."""
        data = await control_json(request)
        appid = data.get("appid", "")
        if sandbox.config.merchant_for_appid(appid) is None:
            raise param_error("appid", "unknown appid", appid)
        code = secrets.token_urlsafe(24)
        sandbox.store.put(
            "wxcode",
            code,
            {
                "appid": appid,
                "openid": data.get("openid")
                or "o" + hashlib.sha256(f"{appid}{secrets.token_hex(4)}".encode()).hexdigest()[:27],
                "session_key": base64.b64encode(secrets.token_bytes(16)).decode(),
                "expires_at": rfc3339(sandbox.clock.now() + timedelta(minutes=5)),
                "used": False,
            },
        )
        return {"code": code}

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        if run_worker:
            sandbox.start()
        yield
        if run_worker:
            sandbox.stop()

    routes = [
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
        Route("/v3/bill/tradebill", wechat(trade_bill), methods=["GET"]),
        Route("/v3/billdownload/file", wechat(download_bill), methods=["GET"]),
        Route("/v3/certificates", wechat(certificates), methods=["GET"]),
        Route("/sns/jscode2session", jscode2session, methods=["GET"]),
        Route("/sandbox/pay", control(sandbox_pay), methods=["POST"]),
        Route("/sandbox/faults", control(sandbox_faults), methods=["GET", "POST"]),
        Route("/sandbox/notifications", control(sandbox_notifications), methods=["GET"]),
        Route("/sandbox/clock", control(sandbox_clock), methods=["GET", "POST"]),
        Route("/sandbox/refunds/{out_refund_no}", control(sandbox_refund), methods=["POST"]),
        Route("/sandbox/wx-login", control(sandbox_wx_login), methods=["POST"]),
        Route("/sandbox/certificates/rotate", control(sandbox_rotate), methods=["POST"]),
    ]

    async def log_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request.state.request_id = str(uuid.uuid4())
        start = time.perf_counter()
        response = await call_next(request)
        log.info(
            "%s %s %d %.1fms",
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - start) * 1000,
        )
        return response

    return Starlette(
        routes=routes, lifespan=lifespan, middleware=[Middleware(BaseHTTPMiddleware, dispatch=log_requests)]
    )
