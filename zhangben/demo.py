"""``make demo`` / ``zhangben demo``: the tour of the README, every step printed as it happens.

It runs its own WeChat Pay sandbox and ledger (``zhangben serve``) as
processes on free ports, in a scratch directory, talks to them over HTTP
like any merchant would, and moves time forward (for expiry, the
compensating query and the next day's bill) with an offset clock.  It exits
0 only if every step held.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import segno
from prometheus_client.parser import text_string_to_metric_families

from adapters.return_signature import verify as verify_return
from adapters.webhooks import verify_signature
from adapters.wechatpay.beijing import BEIJING
from adapters.wechatpay.client import PrepayRequest
from bootstrap.settings import load_settings
from bootstrap.wiring import Runtime, build_runtime
from sandbox.keyset import DIRECT, DIRECT_OA_APPID, PARTNER, V2
from scheduler.runner import JOBS, Scheduler
from zhangben.launch import LEDGER_PORT, Stack, StackError, StackPlan, running_stack

GREEN, RED, BOLD, DIM, RESET = (
    ("\033[32m", "\033[31m", "\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "", "", "")
)


class StepFailed(Exception):
    pass


class OffsetClock:
    """Real time, plus however far the tour has jumped ahead."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def jump(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise StepFailed(what)
    print(f"    {GREEN}✓{RESET} {what}")


def say(text: str) -> None:
    print(f"    {text}")


class TourReceiver:
    """The merchant's business system, as small as docs/webhooks.md's: it verifies each signature, keeps what held."""

    def __init__(self) -> None:
        self.secret = ""
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = verify_signature(self.headers.get("Zhangben-Signature", ""), body, outer.secret, int(time.time()))
                self.send_response(204 if ok else 400)
                self.end_headers()
                if ok:
                    outer.accepted.append(json.loads(body))
                else:
                    outer.refused += 1

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/zhangben/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def types_for(self, no: str) -> list[str]:
        return [e["type"] for e in self.accepted if e["merchant_order_no"] == no]


class Tour:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.ledger, self.sandbox = stack.ledger, stack.sandbox
        self.clock = OffsetClock()
        self.rt: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self.rt is None:
            raise StepFailed("the tour has not started")
        return self.rt

    def start(self) -> None:
        self.key = self.stack.cli("apikey", "create", "--merchant", DIRECT.mchid, "--role", "merchant")
        self.auditor = self.stack.cli("apikey", "create", "--merchant", DIRECT.mchid, "--role", "auditor")
        self.v2_key = self.stack.cli("apikey", "create", "--merchant", V2.mchid, "--role", "merchant")
        root = self.stack.root
        settings = load_settings(
            {"ZHANGBEN_CONFIG": str(root / "zhangben.toml"), "ZHANGBEN_DATABASE_URL": self.stack.database_url}
        )
        self.rt = build_runtime(settings, clock=self.clock)
        self.jobs = Scheduler(self.rt, self.clock, JOBS)
        self.jobs.register_jobs()
        self.http = httpx.Client(base_url=self.ledger, headers={"Authorization": f"Bearer {self.key}"}, timeout=30)
        self.v2 = httpx.Client(base_url=self.ledger, headers={"Authorization": f"Bearer {self.v2_key}"}, timeout=30)
        self.control = httpx.Client(base_url=self.sandbox, timeout=30)
        self.receiver = TourReceiver()
        endpoint = self.http.post("/v1/webhook-endpoints", json={"url": self.receiver.url})
        if endpoint.status_code != 201:
            raise StepFailed(f"webhook endpoint: {endpoint.text}")
        self.receiver.secret = endpoint.json()["secret"]

    def stop(self) -> None:
        self.receiver.server.shutdown()
        if self.rt:
            self.rt.close()

    # -- helpers ------------------------------------------------------------------------------

    def create(self, no: str, amount: int, channel: str = "native", **extra: Any) -> dict[str, Any]:
        answer = self.http.post(
            "/v1/orders",
            json={"merchant_order_no": no, "amount_fen": amount, "description": "奶茶", "channel": channel} | extra,
        )
        if answer.status_code != 201:
            raise StepFailed(f"create {no}: {answer.status_code} {answer.text}")
        return answer.json()

    def pay(self, **how: Any) -> dict[str, Any]:
        answer = self.control.post("/sandbox/pay", json=how)
        if answer.status_code != 200:
            raise StepFailed(f"sandbox pay: {answer.text}")
        return answer.json()

    def faults(self, **faults: Any) -> None:
        self.control.post("/sandbox/faults", json={"reset": True} | faults)

    def order(self, no: str) -> dict[str, Any]:
        return self.http.get(f"/v1/orders/{no}").json()

    def wait_status(
        self, no: str, status: str, timeout: float = 10, client: httpx.Client | None = None
    ) -> dict[str, Any]:
        http = client or self.http
        deadline = time.monotonic() + timeout
        while (view := http.get(f"/v1/orders/{no}").json())["status"] != status and time.monotonic() < deadline:
            time.sleep(0.05)
        return view

    def run_job(self, name: str) -> Any:
        result = self.jobs.run_due().get(name)
        return result

    # -- the tour ---------------------------------------------------------------------------------

    def native_paid_by_scan(self) -> None:
        order = self.create("TOUR-1", 1000)
        code_url = order["payment"]["code_url"]
        say(f"POST /v1/orders → 201, status {order['status']}, out_trade_no {order['payment']['out_trade_no']}")
        say(f"code_url {code_url}, shown to the payer as:")
        segno.make(code_url, error="m").terminal(compact=True, border=1)
        self.pay(code_url=code_url, openid="oTourPayer")
        say("the payer scans and pays in the sandbox; WeChat notifies the ledger")
        check(self.wait_status("TOUR-1", "PAID")["paid_fen"] == 1000, "order TOUR-1 is PAID, 1000 fen")

    def provider_onboards_a_shop(self) -> None:
        """Seed 000: a 服务商 adds a 特约商户 through the API (no restart); its shop sells an itemised order, and the
        payer lands back on the shop's page with a signature the shop checks."""
        provider_key = self.stack.cli("apikey", "create", "--merchant", PARTNER.mchid, "--role", "provider")
        provider = httpx.Client(base_url=self.ledger, headers={"Authorization": f"Bearer {provider_key}"}, timeout=30)
        sub_mchid, sub_appid = "1900000388", "wx38838838838838a0"
        self.control.post(  # WeChat knows the sub-merchant once its 进件 is approved: the sandbox is told so
            "/sandbox/sub-merchants",
            json={"sp_mchid": PARTNER.mchid, "sub_mchid": sub_mchid, "sub_appids": [sub_appid]},
        )
        added = provider.post(
            "/v1/sub-merchants",
            json={
                "sub_mchid": sub_mchid,
                "name": "好茶小铺",
                "apps": [{"appid": sub_appid, "channels": ["jsapi", "miniprogram"]}],
                "return_url_hosts": ["shop.example.com"],
            },
        )
        if added.status_code != 201:
            raise StepFailed(f"POST /v1/sub-merchants: {added.status_code} {added.text}")
        sub = added.json()
        say(f"provider {PARTNER.mchid}: POST /v1/sub-merchants → 201, {sub_mchid} 好茶小铺, notify {sub['notify_url']}")
        shop = httpx.Client(base_url=self.ledger, headers={"Authorization": f"Bearer {sub['api_key']}"}, timeout=30)
        created = shop.post(
            "/v1/orders",
            json={
                "merchant_order_no": "TOUR-SHOP-1",
                "amount_fen": 4590,
                "description": "奶茶两杯和蛋糕",
                "channel": "native",
                "user_id": "u-42",
                "items": [
                    {"name": "珍珠奶茶", "quantity": 2, "unit_price_fen": 1800},
                    {"name": "芝士蛋糕", "quantity": 1, "unit_price_fen": 990},
                ],
                "return_url": "https://shop.example.com/orders/TOUR-SHOP-1",
                "meta": {"table": 7},
            },
        ).json()
        items = ", ".join(f"{i['name']}×{i['quantity']}" for i in created["items"])
        say(f"the shop's own key: POST /v1/orders → {created['status']}, {items}, {created['expire_at']} deadline")
        self.pay(out_trade_no=created["payment"]["out_trade_no"], openid="oShopPayer")
        link = urlsplit(created["cashier_url"])
        status_url = f"{link.path}/status?{link.query}"
        deadline = time.monotonic() + 10
        while "return_to" not in (state := httpx.get(self.ledger + status_url).json()) and time.monotonic() < deadline:
            time.sleep(0.1)
        back = state.get("return_to", "")
        say(f"paid; the cashier page sends the payer to {back[:96]}…")
        key = httpx.get(f"{self.ledger}/v1/return-key").json()
        params = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
        check(
            verify_return(key["public_key_pem"], params) and params.get("merchant_order_no") == "TOUR-SHOP-1",
            "the payer is back on the shop's page; the shop verifies the signature with GET /v1/return-key",
        )

    def miniprogram(self) -> None:
        code = self.control.post("/sandbox/wx-login", json={"appid": DIRECT.appid, "openid": "oMiniTour"}).json()[
            "code"
        ]
        login = self.http.post("/v1/wechat/miniprogram/login", json={"code": code}).json()
        say(
            f"wx.login code → POST /v1/wechat/miniprogram/login → openid {login.get('openid')} (no session key returned)"
        )
        order = self.create("TOUR-2", 1990, "miniprogram", payer_openid=login["openid"])
        params = order["payment"]["pay_params"]
        say(
            "pay_params for wx.requestPayment: "
            + json.dumps({k: (v if k != "paySign" else v[:24] + "…") for k, v in params.items()}, ensure_ascii=False)
        )
        check(
            login == {"openid": "oMiniTour"}
            and params["signType"] == "RSA"
            and params["package"].startswith("prepay_id=")
            and params["appId"] == DIRECT.appid,
            "mini-program order TOUR-2 has signed pay_params",
        )

    def official_account_oauth(self) -> None:
        """Seed 001: a 公众号 page gets the payer's openid by web authorisation, then pays by JSAPI."""
        asked = self.http.get(
            "/v1/wechat/oauth/authorize-url",
            params={"redirect_uri": "https://shop.example.com/pay?o=TOUR-OA", "state": "TOUR-OA"},
        ).json()
        say(f"GET /v1/wechat/oauth/authorize-url → {asked['url'][:96]}…")
        back = httpx.get(asked["url"].split("#")[0] + "&openid=oTourOA", follow_redirects=False)
        location = back.headers.get("location", "")
        say(f"WeChat (the sandbox) sends the payer back: {location[:96]}…")
        code = parse_qs(urlsplit(location).query)["code"][0]
        got = self.http.post("/v1/wechat/oauth/openid", json={"code": code}).json()
        say(f"POST /v1/wechat/oauth/openid → {got}")
        order = self.create("TOUR-OA", 1200, "jsapi", payer_openid=got["openid"])
        params = order["payment"]["pay_params"]
        say(
            f"JSAPI pay_params for WeixinJSBridge, signed for the 公众号 {params['appId']} (the 小程序 is {DIRECT.appid})"
        )
        check(
            got == {"openid": "oTourOA", "appid": DIRECT_OA_APPID} and params["appId"] == DIRECT_OA_APPID,
            "two apps under one mchid: the 公众号 order is signed for the 公众号's appid",
        )

    def v2_miniprogram_md5(self) -> None:
        """Seed 004: a v2 merchant, its mini-program paying with an MD5 ``paySign``; the result arrives as XML."""
        code = self.control.post("/sandbox/wx-login", json={"appid": V2.appid, "openid": "oMiniV2"}).json()["code"]
        openid = self.v2.post("/v1/wechat/miniprogram/login", json={"code": code}).json()["openid"]
        answer = self.v2.post(
            "/v1/orders",
            json={
                "merchant_order_no": "TOUR-V2",
                "amount_fen": 1200,
                "description": "奶茶 (v2)",
                "channel": "miniprogram",
                "payer_openid": openid,
            },
        )
        if answer.status_code != 201:
            raise StepFailed(f"create TOUR-V2: {answer.status_code} {answer.text}")
        params = answer.json()["payment"]["pay_params"]
        say(f"merchant {V2.mchid} is on API v2: unifiedorder over XML, the same POST /v1/orders")
        say("pay_params: " + json.dumps(params, ensure_ascii=False))
        key = (self.stack.root / "keys" / V2.mchid / "v2_key").read_text().strip()
        signed = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "paySign") + f"&key={key}"
        check(
            params["signType"] == "MD5" and hashlib.md5(signed.encode()).hexdigest().upper() == params["paySign"],  # noqa: S324 — WeChat's v2 MD5
            "paySign = MD5(appId, nonceStr, package, signType, timeStamp, key), as seed 004 signs it",
        )
        self.pay(prepay_id=params["package"].removeprefix("prepay_id="), openid=openid)
        view = self.wait_status("TOUR-V2", "PAID", client=self.v2)
        say("paid; WeChat's XML pay notification reached /wechatpay/v2/notify and was answered SUCCESS")
        check(view["status"] == "PAID" and view["paid_fen"] == 1200, "v2 order TOUR-V2 is PAID, 1200 fen")

    def product_code_mode1(self) -> None:
        """Seed 003: a printed product code; each scan becomes an order at the product's price."""
        self.v2.post("/v1/products", json={"product_id": "milktea-l", "amount_fen": 1800, "description": "大杯奶茶"})
        code = self.v2.get("/v1/products/milktea-l/qr").json()["code_url"]
        say("POST /v1/products {product_id: milktea-l, 1800 fen}; GET /v1/products/milktea-l/qr → print it:")
        say(code)
        segno.make(code, error="m").terminal(compact=True, border=1)
        scanned = self.control.post("/sandbox/scan", json={"code_url": code, "openid": "oShelf", "pay": True}).json()
        say(
            "scanned: WeChat called /wechatpay/v2/native-callback with the product_id; the ledger opened an order, "
            f"prepaid it and answered prepay_id {scanned.get('answer', {}).get('prepay_id')}"
        )
        out_trade_no = scanned.get("out_trade_no")
        deadline, found = time.monotonic() + 10, None
        while found is None or found["status"] != "PAID":
            orders = self.v2.get("/v1/orders", params={"limit": 50}).json()["orders"]
            found = next((o for o in orders if any(p["out_trade_no"] == out_trade_no for p in o["payments"])), None)
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        check(
            scanned.get("accepted") is True
            and found is not None
            and found["status"] == "PAID"
            and found["amount_fen"] == 1800,
            f"order {found['merchant_order_no'] if found else '?'} for the scanned product is PAID, 1800 fen",
        )

    def three_deliveries_one_change(self) -> None:
        self.faults(notifications="duplicate", duplicate_count=3)
        order = self.create("TOUR-3", 500)
        self.pay(out_trade_no=order["payment"]["out_trade_no"])
        self.wait_status("TOUR-3", "PAID")
        time.sleep(0.3)
        log = [
            d
            for d in self.control.get("/sandbox/notifications").json()["deliveries"]
            if d["out_trade_no"] == order["payment"]["out_trade_no"]
        ]
        say(f"the sandbox delivered the notification {len(log)} times: statuses {[d['status'] for d in log]}")
        events = self.auditor_history("TOUR-3")
        paid = [e for e in events if e["type"] == "Paid"]
        check(len(log) == 3 and len(paid) == 2, "three deliveries, one Payment.Paid and one Order.Paid")
        self.faults()

    def dropped_and_healed(self) -> None:
        self.faults(notifications="drop")
        order = self.create("TOUR-4", 800)
        self.pay(out_trade_no=order["payment"]["out_trade_no"])
        time.sleep(0.3)
        say(f"paid at WeChat, notification dropped: the ledger says {self.order('TOUR-4')['status']}")
        self.clock.jump(seconds=61)
        say(f"a minute later the compensating query runs: {self.run_job('compensating_query')}")
        check(self.order("TOUR-4")["status"] == "PAID", "order TOUR-4 is PAID, found by the query")
        self.faults()

    def expires_and_closed(self) -> None:
        order = self.create("TOUR-5", 300, expire_seconds=60)
        self.clock.jump(seconds=125)
        say(f"two minutes pass unpaid; the expiry job runs: {self.run_job('expiry')}")
        at_wechat = self.runtime.client.query(
            self.runtime.client.merchant(DIRECT.mchid), order["payment"]["out_trade_no"]
        )
        check(
            self.order("TOUR-5")["status"] == "EXPIRED" and at_wechat["trade_state"] == "CLOSED",
            "order TOUR-5 is EXPIRED in the ledger and CLOSED at WeChat",
        )

    def refunds(self) -> None:
        answer = self.http.post("/v1/orders/TOUR-1/refunds", json={"out_refund_no": "TOUR-1-R1", "amount_fen": 300})
        say(f"partial refund of 300 fen on TOUR-1 → {answer.status_code} {answer.json()['status']}")
        partial = self.wait_status("TOUR-1", "PARTIALLY_REFUNDED")
        self.http.post("/v1/orders/TOUR-3/refunds", json={"out_refund_no": "TOUR-3-R1", "amount_fen": 500})
        full = self.wait_status("TOUR-3", "REFUNDED")
        over = self.http.post("/v1/orders/TOUR-3/refunds", json={"amount_fen": 1})
        say(f"refunding TOUR-3 once more → {over.status_code} ({over.json()['detail']})")
        check(
            partial["refunded_fen"] == 300 and full["refunded_fen"] == 500 and over.status_code == 409,
            "TOUR-1 PARTIALLY_REFUNDED (300 of 1000), TOUR-3 REFUNDED, over-refund refused",
        )

    def webhooks_told_the_shop(self) -> None:
        """Seed 000's ``notifyBusinessSystem(order)``: the ledger pushes each business event, signed."""
        say(f"at the start the tour registered {self.receiver.url} (POST /v1/webhook-endpoints)")
        deadline = time.monotonic() + 10
        while self.receiver.types_for("TOUR-1") != ["order.paid", "refund.succeeded"] and time.monotonic() < deadline:
            time.sleep(0.05)
        got = self.receiver.types_for("TOUR-1")
        say(f"the receiver verified Zhangben-Signature (HMAC-SHA256 over t.body) and accepted for TOUR-1: {got}")
        forged = httpx.post(
            self.receiver.url,
            content=b'{"type":"order.paid","merchant_order_no":"TOUR-1"}',
            headers={"Zhangben-Signature": f"t={int(time.time())},v1=" + "0" * 64},
        )
        say(f"a forged POST to the receiver → {forged.status_code}")
        feed = self.http.get("/v1/events", params={"type": "refund.succeeded"}).json()["events"]
        check(
            got == ["order.paid", "refund.succeeded"]
            and forged.status_code == 400
            and any(e["merchant_order_no"] == "TOUR-3" for e in feed),
            "TOUR-1's order.paid and refund.succeeded pushed and verified; a forged one refused; "
            "GET /v1/events has the same",
        )

    def late_payment(self) -> None:
        order = self.create("TOUR-6", 700, expire_seconds=60)
        otn = order["payment"]["out_trade_no"]
        self.runtime.rooms.orders.expire_payment(otn)
        say(f"the ledger expires TOUR-6 locally: {self.order('TOUR-6')['status']}")
        self.pay(out_trade_no=otn, late=True)
        say("WeChat does not always enforce time_expire: the payer pays anyway, and WeChat notifies")
        check(self.wait_status("TOUR-6", "PAID")["paid_fen"] == 700, "the late payment is recorded: TOUR-6 is PAID")

    def bill_reconciled(self) -> None:
        self.stranger_payment()
        now = datetime.fromisoformat(self.control.get("/sandbox/clock").json()["now"])
        self.day = now.astimezone(BEIJING).date()
        ten = datetime.combine(self.day + timedelta(days=1), datetime.min.time(), BEIJING) + timedelta(
            hours=10, minutes=1
        )
        self.control.post("/sandbox/clock", json={"advance_seconds": (ten - now).total_seconds()})
        self.clock.offset = ten - datetime.now(UTC)
        say(f"the clocks move to {ten.isoformat()}: the daily bill job runs")
        result = self.run_job("daily_bill")
        say(f"daily_bill: {result}")
        report = self.runtime.finance.report(DIRECT.mchid, self.day)
        say(
            f"merchant {DIRECT.mchid}, {self.day}: matched {report['matched']}, differences {len(report['differences'])}"
        )
        check(
            report["bill_imported"] and report["matched"] >= 6 and report["differences"] == [],
            f"{self.day}'s bill downloaded and reconciled with zero differences",
        )

    def stranger_payment(self) -> None:
        """Seed one difference: WeChat takes money for the sub-merchant that the ledger never saw.

        The order is made at WeChat directly (another system with the same merchant keys), so the
        ledger records nothing; its notification is dropped.
        """
        self.faults(notifications="drop")
        merchant = self.runtime.client.merchant(PARTNER.sub_mchid)
        expiry = datetime.now(UTC) + timedelta(minutes=30)
        self.runtime.client.prepay(merchant, PrepayRequest("native", "STRANGER01", "门店收银", 1500, expiry))
        self.pay(out_trade_no="STRANGER01")
        say(
            f"(seeded for step 9: sub-merchant {PARTNER.sub_mchid} was paid 1500 fen at WeChat for STRANGER01, "
            "an order made outside the ledger)"
        )
        self.faults()

    def seeded_difference(self) -> None:
        report = self.runtime.finance.report(PARTNER.sub_mchid, self.day)
        for d in report["differences"]:
            say(
                f"{d['kind']}: out_trade_no {d['out_trade_no']}, transaction {d['transaction_id']}, "
                f"bill {d['bill_fen']} fen, ledger {d['ledger_fen']}"
            )
        check(
            [(d["kind"], d["out_trade_no"]) for d in report["differences"]] == [("missing_in_ledger", "STRANGER01")],
            "the seeded difference is found: money WeChat took that the ledger never saw",
        )

    def trial_balance(self) -> None:
        journal = self.runtime.finance.journal_report(DIRECT.mchid, self.day, self.day + timedelta(days=1))
        balance = journal["trial_balance"]
        for account, sums in balance["accounts"].items():
            say(f"{account:<16} debit {sums['debit_fen']:>6} fen   credit {sums['credit_fen']:>6} fen")
        check(
            balance["debit_fen"] == balance["credit_fen"],
            f"trial balance: {balance['debit_fen']} = {balance['credit_fen']} fen, zero to the fen",
        )

    def history_as_of(self) -> None:
        events = self.auditor_history("TOUR-1")
        refund_at = next(e["timestamp"] for e in events if e["type"] == "RefundRequested")
        moment = (datetime.fromisoformat(refund_at) - timedelta(milliseconds=1)).isoformat()
        past = httpx.get(
            f"{self.ledger}/v1/audit/orders/TOUR-1/history",
            params={"as_of": moment},
            headers={"Authorization": f"Bearer {self.auditor}"},
        ).json()
        say(f"TOUR-1 has {len(events)} events; as of {moment} there were {len(past['events'])}:")
        for e in past["events"]:
            say(f"  {DIM}{e['timestamp'][11:23]}{RESET} {e['aggregate']:<8} {e['type']}")
        check(
            past["state"]["status"] == "PAID" and self.order("TOUR-1")["status"] == "PARTIALLY_REFUNDED",
            "replayed as of that moment it was PAID; now it is PARTIALLY_REFUNDED",
        )

    def monitoring(self) -> None:
        """The figures ops/prometheus-rules.yml alerts on and ops/grafana-dashboard.json draws, as a scrape sees them."""
        text = httpx.get(f"{self.ledger}/metrics", timeout=10).text
        (self.stack.root / "metrics.txt").write_text(text, encoding="utf-8")
        samples = parse_metrics(text)
        created = samples.get(("zhangben_orders_created_total", ()), 0)
        paid = samples.get(("zhangben_orders_paid_total", ()), 0)
        say(f"orders created {created:.0f}, paid {paid:.0f} (zhangben_orders_created_total, …_paid_total)")
        calls = {
            dict(labels).get("endpoint", ""): value
            for (name, labels), value in samples.items()
            if name == "zhangben_wechatpay_calls_total" and dict(labels).get("code", "").startswith("2")
        }
        say("WeChat calls answered 2xx by endpoint: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(calls.items())))
        accepted = samples.get(("zhangben_callbacks_total", (("result", "accepted"),)), 0)
        say(f"callbacks accepted {accepted:.0f}; all of it in {self.stack.root / 'metrics.txt'}")
        check(created > 0 and 0 < paid <= created, "orders created and paid are counted")
        check(calls.get("prepay", 0) > 0, "WeChat prepay calls are counted by endpoint")

    def auditor_history(self, no: str) -> list[dict[str, Any]]:
        return httpx.get(
            f"{self.ledger}/v1/audit/orders/{no}/history", headers={"Authorization": f"Bearer {self.auditor}"}
        ).json()["events"]


STEPS: list[tuple[str, Callable[[Tour], None]]] = [
    ("A Native order, paid by scan", Tour.native_paid_by_scan),
    ("A provider adds a shop; an itemised order; back to the shop", Tour.provider_onboards_a_shop),
    ("A mini-program order and its pay_params", Tour.miniprogram),
    ("A 公众号 payer: openid by web authorisation, then JSAPI", Tour.official_account_oauth),
    ("An API v2 mini-program order, paid with an MD5 paySign", Tour.v2_miniprogram_md5),
    ("A printed product code (Native mode 1), scanned and paid", Tour.product_code_mode1),
    ("A notification delivered three times changes the ledger once", Tour.three_deliveries_one_change),
    ("A notification that never arrives, healed by the compensating query", Tour.dropped_and_healed),
    ("An order that expires and is closed", Tour.expires_and_closed),
    ("A partial and a full refund", Tour.refunds),
    ("The shop's system told by a signed webhook", Tour.webhooks_told_the_shop),
    ("A late payment after local expiry", Tour.late_payment),
    ("The day's bill, downloaded and reconciled", Tour.bill_reconciled),
    ("One seeded difference, found", Tour.seeded_difference),
    ("The journal's trial balance", Tour.trial_balance),
    ("An order's history, replayed as of a past moment", Tour.history_as_of),
    ("What monitoring sees: /metrics", Tour.monitoring),
]


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text exposition → {(name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def cmd_demo(args: argparse.Namespace) -> int:
    return main(Path(args.workdir) if args.workdir else None)


def main(workdir: Path | None = None) -> int:
    """The tour in a scratch directory, or in ``workdir`` (kept: keys, database, the processes' log)."""
    logging.getLogger("zhangben").setLevel(logging.ERROR)  # the tour says what happens itself
    print(f"{BOLD}zhangben — the tour{RESET}")
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return _tour_in(workdir)
    with tempfile.TemporaryDirectory(prefix="zhangben-demo-") as tmp:
        return _tour_in(Path(tmp))


def _tour_in(root: Path) -> int:
    try:
        with running_stack(root, f"sqlite:///{root}/ledger.db", StackPlan(serve_args=("--no-scheduler",))) as stack:
            return run_tour(stack)
    except StackError as exc:
        print(f"{RED}could not start: {exc}{RESET}")
        return 1


def run_tour(stack: Stack) -> int:
    tour = Tour(stack)
    tour.start()
    print(f"{DIM}ledger {tour.ledger}, WeChat Pay sandbox {tour.sandbox}, working in {stack.root}{RESET}\n")
    held = 0
    try:
        for number, (title, step) in enumerate(STEPS, start=1):
            print(f"{BOLD}{number:>2}. {title}{RESET}")
            try:
                step(tour)
                held += 1
            except (StepFailed, httpx.HTTPError, KeyError) as exc:
                print(f"    {RED}✗ {exc}{RESET}")
            print()
    finally:
        tour.stop()
    ok = held == len(STEPS)
    print(f"{BOLD}{GREEN if ok else RED}{held} of {len(STEPS)} steps held{RESET}")
    print(
        f"{DIM}The people's side of it: `make serve`, then open http://127.0.0.1:{LEDGER_PORT}/console and log in "
        f"with the API key it prints (docs/console.md).{RESET}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
