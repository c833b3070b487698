"""Callback ingest through HTTP with and without a webhook endpoint configured (issue: within 10 %).

``zhangben serve --workers 2`` on PostgreSQL, its delivery worker running; the
endpoint is a local receiver that answers 204.  Each phase pays its own orders
with 8 concurrent senders of signed v3 notifications; the phases alternate
(without, with, without, with) so a warming database favours neither.
"""

from __future__ import annotations

import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from sandbox.keyset import DIRECT
from sandbox.notices import WechatSender, paid_transaction
from zhangben.deployment import deploy
from zhangben.pgserver import ThrowawayPostgres

SENDERS = 8


class _Receiver:
    def __init__(self) -> None:
        self.count = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.count += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def webhook_ingest(server: ThrowawayPostgres, count: int) -> dict[str, Any]:
    """Callbacks/s without and with an endpoint (best of two phases each), and how many events were delivered."""
    receiver = _Receiver()
    rates: dict[str, list[float]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp, deploy(Path(tmp), server.create_database("hooks"), workers=2) as d:
        d.faults(notifications="drop")  # the callbacks come from the senders below
        wechat = WechatSender.from_keyset(Path(tmp) / "keys", DIRECT.mchid)
        local = threading.local()

        def http() -> httpx.Client:
            if not hasattr(local, "client"):
                local.client = d.client()
            return local.client

        def create(no: str) -> str:
            body = {"merchant_order_no": no, "amount_fen": 1000, "description": "bench", "channel": "native"}
            answer = http().post("/v1/orders", json=body)
            assert answer.status_code == 201, answer.text
            return str(answer.json()["payment"]["out_trade_no"])

        def phase(name: str, round_no: int) -> None:
            with ThreadPoolExecutor(SENDERS) as pool:
                numbers = [f"WH{name}{round_no}-{i}" for i in range(count)]
                out_trade_nos = list(pool.map(create, numbers))
                bodies = [
                    wechat.body(
                        "TRANSACTION.SUCCESS",
                        paid_transaction(
                            DIRECT.mchid,
                            DIRECT.appid,
                            otn,
                            1000,
                            f"42{'H' if name == 'with' else 'N'}{round_no}{i:018d}",
                        ),
                    )
                    for i, otn in enumerate(out_trade_nos)
                ]

                def send(body: bytes) -> None:
                    answer = http().post("/wechatpay/v3/notify", content=body, headers=wechat.headers(body))
                    assert answer.status_code == 204, answer.text

                start = time.perf_counter()
                list(pool.map(send, bodies))
                rates[name].append(count / (time.perf_counter() - start))

        with d.client() as merchant:
            for round_no in range(2):
                phase("without", round_no)
                created = merchant.post("/v1/webhook-endpoints", json={"url": receiver.url})
                assert created.status_code == 201, created.text
                phase("with", round_no)
                deadline = time.monotonic() + 60  # its deliveries finish before the next phase without
                while receiver.count < (round_no + 1) * count and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert merchant.delete(f"/v1/webhook-endpoints/{created.json()['id']}").status_code == 204
    receiver.server.shutdown()
    return {"without": max(rates["without"]), "with": max(rates["with"]), "delivered": receiver.count}
