"""Admission control in process: slots handed out in order, the priority lane first, the excess shed at once.

The middleware (``api/admission.py``) around a tiny ASGI app whose requests wait on an event, so how many are
in flight is decided by the test, not by a clock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api.admission import FIRST, MERCHANT, Admission, Shed, Turns
from bootstrap.settings import AdmissionLimits, SettingsError, load_settings

LIMITS = AdmissionLimits(max_in_flight=2, queue_seconds=0.2, callback_wait_seconds=1.0, reserve=1)


class Counted:
    """``metrics.shed`` as the middleware counts through it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def labels(self, route: str, lane: str) -> Counted:
        self.seen.append((route, lane))
        return self

    def inc(self) -> None:
        pass


def app(release: asyncio.Event) -> tuple[Starlette, Counted]:
    async def held(request: Request) -> PlainTextResponse:
        await release.wait()
        return PlainTextResponse("done")

    routes = [Route(path, held, methods=["GET", "POST"]) for path in ("/v1/orders", "/wechatpay/v3/notify", "/healthz")]
    inner = Starlette(routes=routes)
    counted = Counted()
    inner.state.metrics = type("Metrics", (), {"shed": counted})()
    inner.add_middleware(Admission, limits=LIMITS)
    return inner, counted


async def _settle() -> None:
    for _ in range(20):  # let every request reach the point where it waits
        await asyncio.sleep(0)


def test_the_excess_is_shed_with_retry_after_and_the_admitted_are_served() -> None:
    async def scenario() -> list[Any]:
        release = asyncio.Event()
        asgi, counted = app(release)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://ledger") as http:
            merchants = [asyncio.create_task(http.post("/v1/orders")) for _ in range(12)]
            await _settle()
            callback = asyncio.create_task(http.post("/wechatpay/v3/notify"))  # a reserved slot is its own
            await _settle()
            shed = [t.result() for t in merchants if t.done()]
            release.set()
            served = await asyncio.gather(*merchants, callback)
            return [shed, served, counted.seen]

    shed, served, seen = asyncio.run(scenario())
    assert shed and all(r.status_code == 503 for r in shed)  # answered while the others were still held
    assert all(r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) >= 1 for r in shed)
    assert all(r.headers["content-type"] == "application/problem+json" for r in shed)
    assert {r.status_code for r in served} == {200, 503}
    assert served[-1].status_code == 200  # the callback was never held behind the merchants
    assert seen and {lane for _, lane in seen} == {MERCHANT} and {route for route, _ in seen} == {"/v1/orders"}


def test_probes_are_never_held() -> None:
    async def scenario() -> int:
        release = asyncio.Event()
        asgi, _ = app(release)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://ledger") as http:
            held = [asyncio.create_task(http.post("/v1/orders")) for _ in range(2 + 1)]
            await _settle()
            health = asyncio.create_task(http.get("/healthz"))
            await _settle()
            release.set()
            await asyncio.gather(*held)
            return (await health).status_code

    assert asyncio.run(scenario()) == 200


def test_a_freed_slot_goes_to_the_priority_lane_first() -> None:
    async def scenario() -> list[str]:
        turns, order = Turns(LIMITS), []
        for _ in range(3):  # two merchant slots and the reserved one, all taken
            await turns.take(FIRST)

        async def wait(lane: str) -> None:
            await turns.take(lane)
            order.append(lane)

        waiting = [asyncio.create_task(wait(MERCHANT)), asyncio.create_task(wait(FIRST))]
        await _settle()
        turns.give_back(0.01)  # the callback's turn, though it came second
        await _settle()
        turns.give_back(0.01)
        turns.give_back(0.01)
        await asyncio.gather(*waiting)
        return order

    assert asyncio.run(scenario()) == [FIRST, MERCHANT]


def test_a_request_that_cannot_be_served_in_time_is_shed_without_waiting() -> None:
    async def scenario() -> int:
        turns = Turns(LIMITS)
        turns.service_seconds = 1.0  # each request takes a second: the queue cannot be served within 0.2 s
        await turns.take(MERCHANT)
        await turns.take(MERCHANT)
        try:
            await turns.take(MERCHANT)
        except Shed as shed:
            return shed.retry_after
        return 0

    assert asyncio.run(scenario()) == 1


@pytest.mark.parametrize(
    ("table", "wrong"),
    [
        ("max_in_flight = 0", "max_in_flight must be a whole number from 1"),
        ('queue_seconds = "fast"', "queue_seconds must be a number of seconds above 0"),
        ("reserve = -1", "reserve must be a whole number from 0"),
        ("workers = 4", "[admission] has no setting 'workers'"),
    ],
)
def test_admission_settings_are_checked(tmp_path: Any, table: str, wrong: str) -> None:
    config = tmp_path / "zhangben.toml"
    config.write_text(f"[admission]\n{table}\n", encoding="utf-8")
    with pytest.raises(SettingsError) as error:
        load_settings({"ZHANGBEN_CONFIG": str(config)})
    assert wrong in str(error.value)


def test_admission_settings_are_read(tmp_path: Any) -> None:
    config = tmp_path / "zhangben.toml"
    config.write_text("[admission]\nmax_in_flight = 32\nqueue_seconds = 0.25\n", encoding="utf-8")
    limits = load_settings({"ZHANGBEN_CONFIG": str(config)}).admission
    assert limits == AdmissionLimits(max_in_flight=32, queue_seconds=0.25)


def test_a_request_abandoned_as_it_is_given_a_slot_passes_the_slot_on() -> None:
    async def scenario() -> int:
        turns = Turns(LIMITS)
        await turns.take(MERCHANT)
        await turns.take(MERCHANT)
        waiter = asyncio.create_task(turns.take(MERCHANT))
        await _settle()
        turns.give_back(0.01)  # the slot is handed to the waiter…
        waiter.cancel()  # …which is abandoned before it runs again (a client gone, a budget spent)
        with pytest.raises(asyncio.CancelledError):
            await waiter
        turns.give_back(0.01)
        return turns.in_flight

    assert asyncio.run(scenario()) == 0  # nothing leaked: every slot came back
