"""Webhooks end to end, as processes: ``serve --no-webhooks --workers 2`` on PostgreSQL, ``zhangben webhooks run``
workers that are SIGKILLed, and the receiver of docs/webhooks.md (run as written) verifying every signature.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from sandbox.keyset import DIRECT, PARTNER
from tests.api.test_review_api import duplicate_paid
from tests.deploy import Deployment, deploy, merchant_store
from zhangben.launch import free_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
PYTHON = [sys.executable, "-m", "zhangben.cli"]


class ReceiverProcess:
    """docs/webhooks.md's receiver, as written, on a fixed port; what it accepted is on its stdout."""

    def __init__(self, root: Path, port: int, secret: str) -> None:
        code = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
        assert code is not None
        self.script = root / "receiver.py"
        self.script.write_text(code.group(1), encoding="utf-8")
        self.port, self.secret, self.out = port, secret, root / "received.jsonl"
        self.process: subprocess.Popen[bytes] | None = None
        self._file: IO[bytes] | None = None

    def start(self) -> None:
        self._file = self.out.open("ab")
        env = {**os.environ, "ZHANGBEN_WEBHOOK_SECRET": self.secret, "PORT": str(self.port)}
        self.process = subprocess.Popen(
            [sys.executable, str(self.script)], env=env, stdout=self._file, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("the receiver did not start")

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
        if self._file:
            self._file.close()
            self._file = None

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.read_text(encoding="utf-8").splitlines() if line.strip()]


class Workers:
    """``zhangben webhooks run`` processes."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log = (deployment.root / "webhook-workers.log").open("ab")

    def start(self) -> None:
        self.processes.append(
            subprocess.Popen(
                [*PYTHON, "webhooks", "run"],
                env=self.deployment.env,
                cwd=self.deployment.root,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
        )

    def kill_one(self) -> None:
        process = self.processes.pop(0)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(10)
        self.processes.clear()
        self.log.close()


def running(postgres: Any, factory: pytest.TempPathFactory, partitions: int) -> Iterator[Deployment]:
    """The stack this module's tests share: webhooks delivered by the test's own workers, retries sped up."""
    root = factory.mktemp("webhooks")
    os.environ["ZHANGBEN_WEBHOOKS_TIME_FACTOR"] = "1000"  # retries after 5 ms, 30 ms, 120 ms, 0.6 s, 1.8 s, …
    extra = f"[partitioning]\npartitions = {partitions}\n"
    try:
        url = postgres.create_database("webhooks")
        with deploy(root, url, workers=2, serve_args=("--no-webhooks",), config_extra=extra) as d:
            yield d
    finally:
        del os.environ["ZHANGBEN_WEBHOOKS_TIME_FACTOR"]


@pytest.fixture(scope="module")
def stack(postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One partition (``test_webhooks_partitioned`` runs these tests again with eight)."""
    yield from running(postgres, tmp_path_factory, 1)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def paid_and_refunded(stack: Deployment, http: httpx.Client, no: str) -> None:
    created = http.post(
        "/v1/orders", json={"merchant_order_no": no, "amount_fen": 500, "description": "茶", "channel": "native"}
    )
    assert created.status_code == 201, created.text
    stack.pay(created.json()["payment"]["out_trade_no"])
    stack.wait_status(no, "PAID")
    refund = http.post(f"/v1/orders/{no}/refunds", json={"out_refund_no": f"{no}-R", "amount_fen": 500})
    assert refund.status_code == 202, refund.text


def by_order(events: list[dict[str, Any]], prefix: str) -> dict[str, list[str]]:
    """Each order's event types in the order first received."""
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for e in events:
        if e["merchant_order_no"].startswith(prefix) and e["id"] not in seen:
            seen.add(e["id"])
            out.setdefault(e["merchant_order_no"], []).append(e["type"])
    return out


@pytest.mark.ha
def test_every_event_arrives_in_order_through_sigkills_and_an_outage(stack: Deployment) -> None:
    port = free_port()
    with stack.client() as http:
        answer = http.post("/v1/webhook-endpoints", json={"url": f"http://127.0.0.1:{port}/zhangben"})
        assert answer.status_code == 201, answer.text
        endpoint = answer.json()
        receiver = ReceiverProcess(stack.root, port, endpoint["secret"])
        workers = Workers(stack)
        receiver.start()
        try:
            # two workers, no kills: every event exactly once
            workers.start()
            workers.start()
            for i in range(4):
                paid_and_refunded(stack, http, f"WH-A{i}")
            wait_until(lambda: len(by_order(receiver.events(), "WH-A")) == 4, 30, "the first orders' events")
            wait_until(
                lambda: all(
                    t == ["order.paid", "refund.succeeded"] for t in by_order(receiver.events(), "WH-A").values()
                ),
                30,
                "refund.succeeded after order.paid",
            )
            time.sleep(1)
            ids = [e["id"] for e in receiver.events()]
            assert len(ids) == len(set(ids)) == 8, "two workers sent one event twice"

            # SIGKILL a worker after each order is paid and refunded (twice running): nothing is lost
            for i in range(6):
                paid_and_refunded(stack, http, f"WH-K{i}")
                workers.kill_one()
                workers.start()
            wait_until(
                lambda: (
                    by_order(receiver.events(), "WH-K")
                    == {f"WH-K{i}": ["order.paid", "refund.succeeded"] for i in range(6)}
                ),
                60,
                "every event after the kills, in order per order",
            )

            # the receiver is down for a while: retries bring everything once it is back
            receiver.stop()
            for i in range(2):
                paid_and_refunded(stack, http, f"WH-D{i}")
            wait_until(lambda: _failed_attempts(http, "WH-D0") > 0, 20, "a failed attempt while the receiver is down")
            time.sleep(1.5)
            receiver.start()
            wait_until(
                lambda: (
                    by_order(receiver.events(), "WH-D")
                    == {f"WH-D{i}": ["order.paid", "refund.succeeded"] for i in range(2)}
                ),
                60,
                "everything once the receiver is back",
            )
        finally:
            workers.stop()
            receiver.stop()

        # what was sent is recorded, and can be sent again
        paid = next(e for e in receiver.events() if e["merchant_order_no"] == "WH-A0")
        deliveries = http.get(f"/v1/events/{paid['id']}/deliveries").json()["deliveries"]
        assert deliveries and deliveries[-1]["status_code"] == 204 and deliveries[-1]["endpoint_id"] == endpoint["id"]
        assert http.post(f"/v1/events/{paid['id']}/redeliver").json() == {"queued": 1}
        metrics = httpx.get(f"{stack.ledger}/metrics").text
        assert 'zhangben_webhook_deliveries{state="delivered"}' in metrics
        assert "zhangben_webhook_endpoints_failing 0.0" in metrics


def _failed_attempts(http: httpx.Client, no: str) -> int:
    events = http.get("/v1/events", params={"limit": 500}).json()["events"]
    ids = [e["id"] for e in events if e["merchant_order_no"] == no]
    return sum(
        1 for i in ids for d in http.get(f"/v1/events/{i}/deliveries").json()["deliveries"] if d["status_code"] is None
    )


def test_the_feed_pages_oldest_first_and_its_cursor_survives_a_rebuild(stack: Deployment) -> None:
    with stack.client() as http:
        for i in range(3):
            paid_and_refunded(stack, http, f"WH-F{i}")
        for i in range(3):
            stack.wait_status(f"WH-F{i}", "REFUNDED")

        def everything() -> list[dict[str, Any]]:
            events, cursor = [], None
            while True:
                page = http.get("/v1/events", params={"limit": 2} | ({"after": cursor} if cursor else {})).json()
                events += page["events"]
                if not page["events"]:
                    return events
                cursor = page["next_cursor"]

        before = everything()
        mine = [e for e in before if e["merchant_order_no"].startswith("WH-F")]
        assert by_order(mine, "WH-F") == {f"WH-F{i}": ["order.paid", "refund.succeeded"] for i in range(3)}
        assert [e["id"] for e in before] == sorted(e["id"] for e in before)
        assert {e["type"]: e["data"]["order"]["status"] for e in mine} == {
            "order.paid": "PAID",
            "refund.succeeded": "REFUNDED",
        }
        assert all(e["mchid"] == DIRECT.mchid for e in before)
        schema = merchant_store(stack, DIRECT.mchid).schema  # p000 with one partition, p007 with eight
        prefix = "evt_" if schema == "p000" else f"evt_{schema}_"
        assert all(e["id"].startswith(prefix) and e["id"][len(prefix) :].isdigit() for e in before)  # ids name it
        only_paid = http.get("/v1/events", params={"type": "order.paid", "after": mine[0]["id"]}).json()["events"]
        assert mine[0]["merchant_order_no"] == "WH-F0"
        assert [e["merchant_order_no"] for e in only_paid if e["merchant_order_no"].startswith("WH-F")] == [
            "WH-F1",
            "WH-F2",
        ]
        assert http.get(f"/v1/events/{mine[-1]['id']}").json() == mine[-1]

        stack.cli("projections", "rebuild", "business_events")
        assert everything() == before
        last = before[-1]["id"]
        assert http.get("/v1/events", params={"after": last}).json() == {"events": [], "next_cursor": last}
        assert http.get("/v1/events", params={"type": "order.shipped"}).status_code == 422
        assert http.get("/v1/events/evt_nope").status_code == 404


def test_another_merchants_events_and_endpoints_are_404(stack: Deployment) -> None:
    with stack.client() as http, stack.client("partner") as other:
        paid_and_refunded(stack, http, "WH-X1")
        stack.wait_status("WH-X1", "REFUNDED")
        event = next(
            e
            for e in http.get("/v1/events", params={"limit": 500}).json()["events"]
            if e["merchant_order_no"] == "WH-X1"
        )
        endpoint = http.post("/v1/webhook-endpoints", json={"url": "https://shop.example.com/hook"}).json()
        assert other.get(f"/v1/events/{event['id']}").status_code == 404
        assert other.get(f"/v1/events/{event['id']}/deliveries").status_code == 404
        assert other.post(f"/v1/events/{event['id']}/redeliver").status_code == 404
        assert all(e["mchid"] == PARTNER.sub_mchid for e in other.get("/v1/events").json()["events"])
        assert other.get(f"/v1/webhook-endpoints/{endpoint['id']}").status_code == 404
        assert other.delete(f"/v1/webhook-endpoints/{endpoint['id']}").status_code == 404
        assert other.get("/v1/webhook-endpoints").json() == {"endpoints": []}
        assert "secret" not in http.get(f"/v1/webhook-endpoints/{endpoint['id']}").json()
        assert http.delete(f"/v1/webhook-endpoints/{endpoint['id']}").status_code == 204
        assert http.get(f"/v1/webhook-endpoints/{endpoint['id']}").status_code == 404
        bad = http.post("/v1/webhook-endpoints", json={"url": "https://x.example/h", "event_types": ["order.shipped"]})
        assert bad.status_code == 422


def test_an_order_paid_short_over_or_twice_is_announced_paid_only_when_settled(stack: Deployment) -> None:
    """Issue 23, point 2: a shop that ships on ``order.paid`` never ships an underpaid order; the feed after a
    rebuild is the same; ``payment.duplicate`` reaches the webhook receiver."""
    port = free_port()
    with stack.client() as http:
        endpoint = http.post("/v1/webhook-endpoints", json={"url": f"http://127.0.0.1:{port}/zhangben"}).json()
        receiver = ReceiverProcess(stack.root, port, endpoint["secret"])
        workers = Workers(stack)
        receiver.start()
        workers.start()
        try:
            for no, total in (("WH-R-UNDER", 800), ("WH-R-OVER", 1500)):
                made = http.post(
                    "/v1/orders",
                    json={"merchant_order_no": no, "amount_fen": 1000, "description": "茶", "channel": "native"},
                )
                stack.pay(made.json()["payment"]["out_trade_no"], total_fen=total)
                stack.wait_status(no, "NEEDS_REVIEW")
            duplicate_paid(stack, "WH-R-TWICE")
            held = {"WH-R-UNDER": ["order.needs_review"], "WH-R-OVER": ["order.needs_review"]}
            held["WH-R-TWICE"] = ["order.paid", "order.needs_review", "payment.duplicate"]
            wait_until(lambda: by_order(receiver.events(), "WH-R-") == held, 30, "the reviews, and no order.paid")
            status = {e["merchant_order_no"]: e["data"]["order"]["status"] for e in receiver.events()}
            assert status["WH-R-UNDER"] == status["WH-R-OVER"] == "NEEDS_REVIEW"

            accept = {"note": "顾客线下补了 2 元", "action": "accept"}
            assert http.post("/v1/orders/WH-R-UNDER/review/resolve", json=accept).status_code == 200
            surplus = {"note": "多付 5 元，退回", "action": "refund"}
            assert http.post("/v1/orders/WH-R-OVER/review/resolve", json=surplus).status_code == 200
            assert http.post("/v1/orders/WH-R-TWICE/review/resolve", json=surplus).status_code == 200
            settled = {
                "WH-R-UNDER": ["order.needs_review", "order.paid"],
                "WH-R-OVER": ["order.needs_review", "order.paid", "refund.succeeded"],
                "WH-R-TWICE": [*held["WH-R-TWICE"], "refund.succeeded"],  # paid once, announced once
            }
            wait_until(lambda: by_order(receiver.events(), "WH-R-") == settled, 30, "order.paid once settled")
            paid = [
                e
                for e in receiver.events()
                if e["type"] == "order.paid" and e["merchant_order_no"] in ("WH-R-UNDER", "WH-R-OVER")
            ]
            assert {e["data"]["order"]["status"] for e in paid} == {"PAID"}
            assert {e["data"]["detail"]["action"] for e in paid} == {"accept", "refund"}
        finally:
            workers.stop()
            receiver.stop()
        feed = http.get("/v1/events", params={"limit": 500}).json()["events"]
        stack.cli("projections", "rebuild", "business_events")
        assert http.get("/v1/events", params={"limit": 500}).json()["events"] == feed
