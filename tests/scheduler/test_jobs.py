"""The jobs with the sandbox and a fake clock."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.leases import Leases
from adapters.wechatpay.beijing import BEIJING
from bootstrap.settings import Settings
from bootstrap.wiring import Runtime, build_runtime, init_database
from domain.requests import NewAttempt, NewOrder, NewRefund, OrderTerms
from sandbox.keyset import DIRECT, V2
from scheduler.runner import JOBS, Scheduler
from tests.conftest import FakeClock
from tests.fixtures_sandbox import RunningSandbox
from zhangben.pgserver import ThrowawayPostgres

JOB = {job.name: job for job in JOBS}


class World:
    def __init__(self, sandbox: RunningSandbox, rt: Runtime, clock: FakeClock) -> None:
        self.sandbox, self.rt, self.clock = sandbox, rt, clock

    def scheduler(self, *names: str) -> Scheduler:
        jobs = tuple(JOB[n] for n in names) if names else JOBS
        scheduler = Scheduler(self.rt, self.clock, jobs)
        scheduler.create_tables()
        return scheduler

    def order(self, no: str, amount: int = 1000, expire_seconds: int = 900) -> str:
        _, checkout = self.rt.service.create_order(
            NewOrder(DIRECT.mchid, no, OrderTerms(amount, "tea", "native", expire_seconds=expire_seconds))
        )
        return checkout.payment.out_trade_no

    def pay(self, out_trade_no: str) -> dict[str, Any]:
        answer = self.sandbox.control.post("/sandbox/pay", json={"out_trade_no": out_trade_no})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def status(self, no: str) -> str:
        return self.rt.rooms.reads.order_view(DIRECT.mchid, no)["status"]

    def faults(self, **faults: Any) -> None:
        assert self.sandbox.control.post("/sandbox/faults", json=faults).status_code == 200


def make_world(sandbox: RunningSandbox, keyset: Path, database_url: str, clock: FakeClock) -> Runtime:
    settings = Settings(
        config_path=keyset / "zhangben.toml",
        database_url=database_url,
        wechatpay_base_url=sandbox.url,
        wechat_api_base_url=sandbox.url,
        wechatpay_secapi_base_url=sandbox.tls_url,
        wechatpay_ca_file=str(keyset / "keys" / "wechatpay" / "tls_ca.pem"),
        merchants=tomllib.loads((keyset / "zhangben.toml").read_text())["merchants"],
    )
    init_database(settings)
    rt = build_runtime(settings, clock=clock)
    rt.client.sleep = lambda seconds: None  # retries without waiting: the fake clock is the test's time
    return rt


@pytest.fixture
def world(start_sandbox: Callable[..., RunningSandbox], keyset: Path, tmp_path: Path) -> Iterator[World]:
    sandbox = start_sandbox()
    clock = FakeClock(datetime.now(UTC))
    rt = make_world(sandbox, keyset, f"sqlite:///{tmp_path}/ledger.db", clock)
    w = World(sandbox, rt, clock)
    w.faults(notifications="drop")  # WeChat's notifications never arrive: the jobs must find out
    yield w
    rt.close()


def test_a_dropped_notification_is_healed_by_the_compensating_query(world: World) -> None:
    otn = world.order("J-Q1")
    world.pay(otn)
    scheduler = world.scheduler("compensating_query")
    assert scheduler.run_due()["compensating_query"] == {"queried": 0, "paid": 0}  # not due: 1 minute after creation
    world.clock.advance(seconds=61)
    assert scheduler.run_due()["compensating_query"] == {"queried": 1, "paid": 1}
    assert world.status("J-Q1") == "PAID"
    paid = [
        e
        for e in world.rt.rooms.reads.order_history(DIRECT.mchid, "J-Q1")
        if e.type == "Paid" and e.aggregate == "Payment"
    ]
    assert paid[0].data["source"] == "query"


def test_the_backoff_schedule_and_its_outer_bound(world: World) -> None:
    world.order("J-Q2", expire_seconds=60)
    scheduler = world.scheduler("compensating_query")
    queried = 0
    for _ in range(8 * 60):  # eight hours, a minute at a time
        world.clock.advance(minutes=1)
        result = scheduler.run_due().get("compensating_query")
        queried += result["queried"] if isinstance(result, dict) else 0
    # 1, 3, 10, 30 min, 1 h, then hourly up to 4 h after expiry (2 h, 3 h, 4 h)
    assert queried == 8


def test_an_unpaid_attempt_expires_and_is_closed_at_wechat(world: World) -> None:
    otn = world.order("J-E1", expire_seconds=60)
    scheduler = world.scheduler("expiry")
    world.clock.advance(seconds=90)
    assert scheduler.run_due()["expiry"] == {"expired": 0, "paid": 0}  # within the grace
    world.clock.advance(seconds=40)
    assert scheduler.run_due()["expiry"] == {"expired": 1, "paid": 0}
    assert world.status("J-E1") == "EXPIRED"
    assert world.rt.client.query(world.rt.client.merchant(DIRECT.mchid), otn)["trade_state"] == "CLOSED"


def test_a_failed_payment_leaves_the_order_payable_and_then_it_expires(world: World) -> None:
    failed = world.order("J-F1", expire_seconds=60)
    retried = world.order("J-F2", expire_seconds=60)
    for otn in (failed, retried):
        answer = world.sandbox.control.post("/sandbox/pay", json={"out_trade_no": otn, "result": "PAYERROR"})
        assert answer.status_code == 200, answer.text
    world.clock.advance(seconds=61)
    assert world.scheduler("compensating_query").run_due()["compensating_query"]["queried"] == 2
    view = world.rt.rooms.reads.order_view(DIRECT.mchid, "J-F1")
    assert (view["status"], view["payments"][0]["status"]) == ("PAYING", "FAILED")
    # payable again: the payer of J-F2 tries once more, and pays
    again = world.rt.service.new_payment(NewAttempt(DIRECT.mchid, "J-F2"))
    assert again.payment.status.value == "PREPAID" and again.payment.out_trade_no != retried
    world.pay(again.payment.out_trade_no)
    world.rt.service.sync(DIRECT.mchid, "J-F2")
    assert world.status("J-F2") == "PAID"
    # nobody retries J-F1: once its time is over it expires, like any unpaid order
    world.clock.advance(seconds=70)
    assert world.scheduler("expiry").run_due()["expiry"] == {"expired": 1, "paid": 0}
    assert world.status("J-F1") == "EXPIRED" and world.status("J-F2") == "PAID"


def test_the_api_certificate_is_warned_about_thirty_days_before_it_expires(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    expires = world.rt.client.merchant(DIRECT.mchid).api_cert_expires_at
    assert expires is not None
    world.clock.now = expires - timedelta(days=40)
    assert world.scheduler("certificates").run_due()["certificates"]["expiring"] == 0
    world.clock.now = expires - timedelta(days=10)
    with caplog.at_level(logging.WARNING, logger="zhangben.scheduler"):
        assert world.scheduler("certificates").run_due()["certificates"]["expiring"] >= 1
    assert f"API certificate {world.rt.client.merchant(DIRECT.mchid).cert_serial_no}" in caplog.text


def test_paid_in_the_last_second_ends_paid_not_expired(world: World) -> None:
    otn = world.order("J-E2", expire_seconds=60)
    world.pay(otn)  # at WeChat, just in time; the notification is lost
    world.clock.advance(seconds=125)
    assert world.scheduler("expiry").run_due()["expiry"] == {"expired": 0, "paid": 1}
    assert world.status("J-E2") == "PAID"


def test_a_processing_refund_ends_success(world: World) -> None:
    otn = world.order("J-R1")
    world.pay(otn)
    world.rt.service.sync(DIRECT.mchid, "J-R1")
    refund = world.rt.refunding.refund(NewRefund(DIRECT.mchid, "J-R1", "J-R1-R", 400))
    assert refund.status.value == "PROCESSING"
    import time as real_time

    real_time.sleep(1.3)  # the sandbox finishes it; its notification is dropped
    scheduler = world.scheduler("refund_follow_up")
    world.clock.advance(seconds=61)
    assert scheduler.run_due()["refund_follow_up"]["settled"] == 1
    assert world.rt.ledger.get_refund(DIRECT.mchid, "J-R1-R").status.value == "SUCCESS"
    assert world.status("J-R1") == "PARTIALLY_REFUNDED"


def test_yesterdays_bill_is_reconciled_at_ten(world: World) -> None:
    day = datetime.fromisoformat(world.sandbox.control.get("/sandbox/clock").json()["now"]).date()
    for i in range(3):
        otn = world.order(f"J-B{i}", 1000 + i)
        world.pay(otn)
        world.rt.service.sync(DIRECT.mchid, f"J-B{i}")
    scheduler = world.scheduler("daily_bill")
    next_day = datetime.combine(day + timedelta(days=1), datetime.min.time(), BEIJING)
    world.clock.now = (next_day + timedelta(hours=9, minutes=59)).astimezone(UTC)
    assert scheduler.run_due()["daily_bill"] == {"imported": 0, "not_ready": 0, "differences": 0}
    sandbox_now = datetime.fromisoformat(world.sandbox.control.get("/sandbox/clock").json()["now"])
    world.sandbox.control.post(
        "/sandbox/clock",
        json={"advance_seconds": (next_day + timedelta(hours=10, minutes=10) - sandbox_now).total_seconds()},
    )
    world.clock.advance(minutes=11)
    result = scheduler.run_due()["daily_bill"]
    assert result["imported"] == 1 and result["differences"] == 0
    report = world.rt.reconciliation.latest_results()
    assert (DIRECT.mchid, day.isoformat(), 3, 0) in report
    world.clock.advance(minutes=11)
    assert scheduler.run_due()["daily_bill"]["imported"] == 0  # done for that day


def test_wechat_failing_for_a_while_delays_but_breaks_nothing(world: World) -> None:
    otn = world.order("J-F1")
    world.pay(otn)
    world.faults(
        notifications="drop",
        endpoints={"/v3/pay/transactions/out-trade-no": {"error_rate": 1, "error_code": "SYSTEM_ERROR", "count": 8}},
    )
    scheduler = world.scheduler("compensating_query", "expiry")
    world.clock.advance(seconds=61)
    results = scheduler.run_due()
    assert str(results["compensating_query"]).startswith("failed")
    assert world.status("J-F1") == "PAYING"
    states = {s.name: s for s in scheduler.leases.states()}
    assert states["compensating_query"].failures == 1 and states["expiry"].failures == 0  # the others carried on
    world.clock.advance(seconds=31)
    assert str(scheduler.run_due()["compensating_query"]).startswith("failed")  # 8 errors = 2 runs of 4 attempts
    world.clock.advance(seconds=31)
    assert scheduler.run_due()["compensating_query"] == {"queried": 1, "paid": 1}
    assert world.status("J-F1") == "PAID"
    states = {s.name: s for s in scheduler.leases.states()}
    assert (states["compensating_query"].runs, states["compensating_query"].failures) == (3, 2)


@pytest.mark.postgres
def test_two_scheduler_processes_on_one_postgres_run_each_job_once_per_due_time(
    start_sandbox: Callable[..., RunningSandbox],
    keyset: Path,
    postgres: ThrowawayPostgres,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sandbox = start_sandbox()
    url = postgres.create_database("sched")
    clock = FakeClock(datetime.now(UTC))
    rt = make_world(sandbox, keyset, url, clock)
    sandbox.control.post("/sandbox/faults", json={"notifications": "drop"})
    for i in range(4):
        rt.service.create_order(NewOrder(DIRECT.mchid, f"J-2S{i}", OrderTerms(1000, "tea", "native")))
    Scheduler(rt, clock, JOBS).create_tables()
    rt.followers["order_status"].catch_up()
    due = (clock.now + timedelta(seconds=61)).isoformat()
    caplog.set_level(logging.INFO, logger="zhangben.sandbox")
    command = [sys.executable, "-m", "tests.scheduler.run_once", str(keyset / "zhangben.toml"), url, sandbox.url, due]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    states = {s.name: s for s in Leases(rt.db).states()}
    assert all(state.runs == 1 for state in states.values()), states
    queries = [r for r in caplog.records if "GET /v3/pay/transactions/out-trade-no/" in r.getMessage()]
    assert len(queries) == 4  # one compensating query per open attempt, not one per process
    ran = [json.loads(out) for out, _ in outputs]
    assert sum(1 for r in ran if "compensating_query" in r) == 1
    rt.close()


def test_a_v2_merchant_runs_the_same_jobs(world: World) -> None:
    """orderquery heals a lost notification, closeorder ends an expired attempt, refundquery settles a refund."""
    rt = world.rt
    _, paid = rt.service.create_order(NewOrder(V2.mchid, "J-V2-1", OrderTerms(1000, "tea", "native")))
    world.pay(paid.payment.out_trade_no)  # the XML notification is dropped
    world.clock.advance(seconds=61)
    assert world.scheduler("compensating_query").run_due()["compensating_query"] == {"queried": 1, "paid": 1}
    assert rt.rooms.reads.order_view(V2.mchid, "J-V2-1")["status"] == "PAID"
    _, unpaid = rt.service.create_order(
        NewOrder(V2.mchid, "J-V2-2", OrderTerms(500, "tea", "native", expire_seconds=60))
    )
    world.clock.advance(seconds=130)
    assert world.scheduler("expiry").run_due()["expiry"] == {"expired": 1, "paid": 0}
    merchant = rt.service.merchant(V2.mchid)
    assert rt.v2.transaction(merchant, unpaid.payment.out_trade_no).trade_state == "CLOSED"
    refund = rt.refunding.refund(NewRefund(V2.mchid, "J-V2-1", "J-V2-1-R", 400))  # /secapi/pay/refund over mutual TLS
    assert refund.status.value == "PROCESSING" and refund.refund_id
    import time as real_time

    real_time.sleep(1.3)  # the sandbox finishes it; its req_info notification is dropped
    world.clock.advance(seconds=61)
    assert world.scheduler("refund_follow_up").run_due()["refund_follow_up"]["settled"] == 1
    assert rt.ledger.get_refund(V2.mchid, "J-V2-1-R").status.value == "SUCCESS"
