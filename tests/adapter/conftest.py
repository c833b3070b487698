from __future__ import annotations

import dataclasses
import json
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from adapters.wechatpay.callbacks import CallbackRejected
from adapters.wechatpay.client import WechatPayClient
from adapters.wechatpay.config import load_merchants
from adapters.wechatpay.errors import SignatureError
from application.callbacks import CallbackRefused, Callbacks
from application.ledger import Ledger
from application.payments import PaymentService
from application.refunding import RefundService
from application.rooms import Rooms
from bootstrap.ledger import open_ledger
from domain.audit import Arrival
from tests.fixtures_sandbox import RunningSandbox


class NotifyEndpoint:
    """The ledger's notify URL, reduced to what the adapter needs: verify, apply, answer."""

    def __init__(self) -> None:
        self.callbacks: Callbacks | None = None
        self.answers: list[int] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                assert endpoint.callbacks is not None
                try:
                    arrival = Arrival(self.path, self.client_address[0], dict(self.headers), body)
                    endpoint.callbacks.handle(arrival)
                    status, payload = 204, b""
                except SignatureError as exc:
                    status, payload = 401, json.dumps({"code": "FAIL", "message": str(exc)}).encode()
                except (CallbackRejected, CallbackRefused) as exc:
                    status, payload = 400, json.dumps({"code": "FAIL", "message": str(exc)}).encode()
                endpoint.answers.append(status)
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/wechatpay/v3/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@dataclasses.dataclass
class Wired:
    sandbox: RunningSandbox
    ledger: Ledger
    client: WechatPayClient
    service: PaymentService
    refunding: RefundService
    callbacks: Callbacks
    endpoint: NotifyEndpoint
    sleeps: list[float]

    def pay(self, out_trade_no: str, **extra: Any) -> dict[str, Any]:
        answer = self.sandbox.control.post("/sandbox/pay", json={"out_trade_no": out_trade_no, "openid": "oP1"} | extra)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def faults(self, **faults: Any) -> None:
        assert self.sandbox.control.post("/sandbox/faults", json=faults).status_code == 200

    def wait_until(self, check: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached")
            time.sleep(0.02)


@pytest.fixture
def wire(start_sandbox: Callable[..., RunningSandbox], keyset: Path, tmp_path: Path) -> Iterator[Callable[..., Wired]]:
    built: list[Wired] = []

    def build(mode: str = "both", public_key: bool = True) -> Wired:
        sandbox = start_sandbox(mode=mode, database=f"sandbox-{len(built)}.db")
        endpoint = NotifyEndpoint()
        tables = tomllib.loads((keyset / "zhangben.toml").read_text())["merchants"]
        if not public_key:  # certificate mode: no public key configured, certificates downloaded
            tables = [
                {k: v for k, v in t.items() if k not in ("platform_public_key_file", "public_key_id")} for t in tables
            ]
        merchants = {
            k: dataclasses.replace(m, notify_url=endpoint.url)
            for k, m in load_merchants(tables, keyset / "zhangben.toml").items()
        }
        sleeps: list[float] = []
        client = WechatPayClient(sandbox.url, merchants, sleep=sleeps.append)
        ledger = open_ledger(f"sqlite:///{tmp_path}/ledger-{len(built)}.db", create_tables=True)
        rooms = Rooms.over(ledger)
        service = PaymentService(rooms, client)
        refunding = RefundService(service, rooms.refunds, rooms.reviews)
        endpoint.callbacks = Callbacks(service, refunding, rooms.audit, service.client.keys)
        wired = Wired(sandbox, ledger, client, service, refunding, endpoint.callbacks, endpoint, sleeps)
        built.append(wired)
        return wired

    yield build
    for wired in built:
        wired.endpoint.server.shutdown()
        wired.client.close_http()
        wired.ledger.close()


@pytest.fixture
def wired(wire: Callable[..., Wired]) -> Wired:
    return wire()
