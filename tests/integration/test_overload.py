"""Past capacity (issue 25): the excess is answered 503 with ``Retry-After`` at once, what was accepted is whole,
and WeChat's callbacks and the health probes still get through.  Behaviour, not timing: how fast belongs to
``make bench``.

The worker is made small on purpose (``[admission] max_in_flight = 2``) so that forty creates at once are
twenty times what it takes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.keyset import DIRECT, PUBLIC_KEY_ID
from tests.deploy import Deployment, deploy
from tests.spec_wechat import SpecWechat, paid_resource

SMALL = "[admission]\nmax_in_flight = 2\nqueue_seconds = 0.05\nreserve = 2\ncallback_wait_seconds = 3\n"
AT_ONCE = 40


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root: Path = tmp_path_factory.mktemp("overload")
    with deploy(root, f"sqlite:///{root}/ledger.db", config_extra=SMALL) as deployment:
        yield deployment


def _create(deployment: Deployment, no: str) -> httpx.Response:
    body = {"merchant_order_no": no, "amount_fen": 100, "description": "秒杀", "channel": "native"}
    with deployment.client() as http:
        return http.post("/v1/orders", json=body)


def test_past_capacity_the_excess_is_shed_and_nothing_is_half_recorded(small: Deployment) -> None:
    small.faults(notifications="drop")  # the callback below is our own, sent in the middle of the rush
    wechat = SpecWechat.from_keyset(small.root / "keys", DIRECT.mchid, PUBLIC_KEY_ID)
    made = _create(small, "RUSH-PAID")
    assert made.status_code == 201, made.text
    otn = made.json()["payment"]["out_trade_no"]
    callback = wechat.body(
        "TRANSACTION.SUCCESS", paid_resource(DIRECT.mchid, DIRECT.appid, otn, 100, "4200000000000000000000088801")
    )

    def notify() -> httpx.Response:
        return httpx.post(f"{small.ledger}/wechatpay/v3/notify", content=callback, headers=wechat.headers(callback))

    numbers = [f"RUSH-{i}" for i in range(AT_ONCE)]
    with ThreadPoolExecutor(AT_ONCE + 2) as pool:
        rush = [pool.submit(_create, small, no) for no in numbers]
        during = [pool.submit(notify), pool.submit(httpx.get, f"{small.ledger}/healthz")]
        answers = [f.result() for f in rush]
        notified, health = (f.result() for f in during)

    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {201, 503}, statuses  # no other 5xx: what could not be taken was refused whole
    shed = [a for a in answers if a.status_code == 503]
    assert shed and 201 in statuses, statuses
    for answer in shed:
        problem: dict[str, Any] = answer.json()
        assert answer.headers["content-type"] == "application/problem+json" and problem["status"] == 503
        assert int(answer.headers["retry-after"]) >= 1
    assert health.status_code == 200
    assert notified.status_code == 204, notified.text  # money that moved is taken even at the peak
    small.wait_status("RUSH-PAID", "PAID")

    with small.client() as http:
        for no, answer in zip(numbers, answers, strict=True):
            found = http.get(f"/v1/orders/{no}")
            if answer.status_code == 201:  # every accepted order is there, with its attempt
                assert found.status_code == 200 and found.json()["payments"], found.text
            else:  # a shed create was never recorded: the merchant's retry makes it, once
                assert found.status_code == 404, found.text
        shed_no = numbers[statuses.index(503)]
        retried = http.post(
            "/v1/orders",
            json={"merchant_order_no": shed_no, "amount_fen": 100, "description": "秒杀", "channel": "native"},
        )
        assert retried.status_code == 201, retried.text
        metrics = http.get("/metrics").text
    counted = [line for line in metrics.splitlines() if line.startswith("zhangben_requests_shed_total{")]
    assert any('route="/v1/orders"' in line and 'lane="merchant"' in line for line in counted), counted
