"""The sandbox's state and background work: faults, the clock, notifications, signing WeChat's answers.

The HTTP faces (``sandbox.http_wechatpay_v3``, ``sandbox.http_miniprogram``,
``sandbox.http_controls``) are thin routers over this object and the model
modules (transactions, refunds, bills).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import secrets
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from adapters.wechatpay import signing, v2_signing
from sandbox import v2_messages
from sandbox.bills import bill_rows, render_bill
from sandbox.clock import BEIJING, SandboxClock, rfc3339
from sandbox.config import SandboxConfig, SandboxMerchant
from sandbox.errors import FAULT_STATUS, WechatError, param_error
from sandbox.fundflow import movements, render_fund_flow
from sandbox.keyset import new_certificate
from sandbox.notifier import Notifier
from sandbox.refunds import Refunds, refund_notice_json
from sandbox.store import SandboxStore
from sandbox.transactions import Transactions, transaction_json

log = logging.getLogger("zhangben.sandbox")

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
        for onboarded in self.store.all("sub_merchant"):  # those registered by earlier runs
            self._onboard(onboarded)

    # -- sub-merchants (进件) ---------------------------------------------------------------

    def register_sub_merchant(self, sp_mchid: str, sub_mchid: str, sub_appids: list[str]) -> dict[str, Any]:
        """A provider's sub-merchant, as WeChat knows it once its 进件 is approved (the provider's partner platform:
        https://pay.weixin.qq.com/doc/v3/partner/4012069852); kept across restarts."""
        if sp_mchid not in self.config.merchants:
            raise param_error("sp_mchid", f"no service provider {sp_mchid} in the sandbox's config", sp_mchid)
        if not sub_mchid.isdigit():
            raise param_error("sub_mchid", "sub_mchid is digits", sub_mchid)
        entry = {"sp_mchid": sp_mchid, "sub_mchid": sub_mchid, "sub_appids": sorted(set(sub_appids))}
        self.store.put("sub_merchant", f"{sp_mchid}/{sub_mchid}", entry)
        self._onboard(entry)
        return entry

    def _onboard(self, entry: dict[str, Any]) -> None:
        merchant = self.config.merchants.get(entry["sp_mchid"])
        if merchant is not None:
            merchant.sub_merchants[entry["sub_mchid"]] = frozenset(entry["sub_appids"])
            for appid in entry["sub_appids"]:  # the provider's app secret stands in for the sub_appid's
                merchant.appsecrets.setdefault(appid, merchant.appsecrets.get(next(iter(merchant.appids)), ""))

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
        if txn.get("api") == "v2":
            merchant = self.config.merchants[txn["mchid"]]
            fields = v2_messages.pay_notification(txn) | {"nonce_str": v2_signing.new_nonce()}
            body = v2_signing.to_xml(v2_signing.signed(fields, merchant.v2_key, txn["sign_type"]))
            keys = {"out_trade_no": txn["out_trade_no"]}
            self.notifier.enqueue_v2(txn["notify_url"], "TRANSACTION.SUCCESS", body, keys, self.faults())
            return
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
            if refund.get("api") == "v2":
                self._notify_refund_v2(refund, status)
                return refund
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

    def _notify_refund_v2(self, refund: dict[str, Any], status: str) -> None:
        """``req_info`` under the MD5 of the v2 key; the envelope carries no sign (docs/wechatpay-protocol.md §6.4)."""
        txn = self.store.get("transaction", refund["txn_key"]) or {}
        merchant = self.config.merchants[refund["mchid"]]
        envelope = v2_messages.ids(txn) | {
            "return_code": "SUCCESS",
            "nonce_str": v2_signing.new_nonce(),
            "req_info": v2_signing.encrypt_req_info(v2_messages.refund_notice(refund), merchant.v2_key),
        }
        keys = {"out_trade_no": refund["out_trade_no"], "out_refund_no": refund["out_refund_no"]}
        self.notifier.enqueue_v2(
            refund["notify_url"], f"REFUND.{status}", v2_signing.to_xml(envelope), keys, self.faults()
        )

    # -- bills ----------------------------------------------------------------------------

    def bill_ready(self, bill_date: date) -> bool:
        """The day's bill is generated from 09:00 the next day (Beijing); it can be downloaded from 10:00."""
        ready_at = datetime.combine(bill_date + timedelta(days=1), datetime.min.time(), BEIJING) + timedelta(hours=10)
        return self.clock.now() >= ready_at

    def bill(self, mchid: str, sub_mchid: str, bill_date: date, bill_type: str) -> bytes | None:
        """The day's trade bill for a merchant (v3 and v2 trades alike), or None when it had none."""
        transactions = [
            t
            for t in self.store.all("transaction")
            if t["mchid"] == mchid and (not sub_mchid or t["sub_mchid"] == sub_mchid)
        ]
        keys = {t["key"] for t in transactions}
        refunds = [r for r in self.store.all("refund") if r["txn_key"] in keys]
        rows = bill_rows(bill_date, transactions, refunds, bill_type)
        return render_bill(rows) if rows else None

    def fund_flow(self, mchid: str, bill_date: date) -> bytes | None:
        """The day's fund flow bill of a merchant's basic account (``sandbox/fundflow.py``), or None."""
        transactions = [t for t in self.store.all("transaction") if t["mchid"] == mchid and not t["sub_mchid"]]
        keys = {t["key"] for t in transactions}
        refunds = [r for r in self.store.all("refund") if r["txn_key"] in keys]
        extra = [m for m in self.store.all("fund_movement") if m["mchid"] == mchid]
        return render_fund_flow(bill_date, movements(bill_date, transactions, refunds, extra))

    def add_fund_movement(self, mchid: str, kind: str, fen: int, note: str) -> dict[str, Any]:
        """Another movement of the balance, now (赔付 in, 扣款 out, …): what a reconciliation must find."""
        reference = "ADJ" + secrets.token_hex(8).upper()
        movement: dict[str, Any] = {
            "mchid": mchid,
            "kind": kind,
            "fen": fen,
            "note": note,
            "at": rfc3339(self.clock.now()),
            "reference": reference,
        }
        self.store.put("fund_movement", reference, movement)
        return movement

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
        registered = merchant.api_certificates.get(auth.serial_no.upper())
        if registered is None or registered[1] <= datetime.now(UTC):  # unknown, or expired at WeChat
            raise WechatError(401, "SIGN_ERROR", "商户证书序列号有误。")
        if (
            not (auth.timestamp.isdigit() and len(auth.timestamp) == 10)
            or abs(time.time() - int(auth.timestamp)) > signing.TIMESTAMP_WINDOW_SECONDS
        ):
            raise WechatError(401, "SIGN_ERROR", "Http头Authorization中的timestamp与发起请求的时间不得超过5分钟")
        url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        message = signing.request_message(request.method, url, auth.timestamp, auth.nonce_str, body)
        if not signing.verify(registered[0], message, auth.signature):
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
