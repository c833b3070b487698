"""``POST /wechatpay/v3/notify`` with callbacks from an independent signer (tests/spec_wechat.py)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from adapters.persistence import DIRECTORY_SCHEMA, parse_url
from adapters.refusals import RefusalCounter
from adapters.viewdb import ViewDatabase
from application.audit import Audit
from bootstrap.ledger import open_ledger
from sandbox.keyset import DIRECT, PUBLIC_KEY_ID
from tests.deploy import STORES, Deployment, sharing
from tests.spec_wechat import SpecWechat, paid_resource


@pytest.fixture(scope="module", params=STORES)
def deployment(request: pytest.FixtureRequest) -> Deployment:
    """This module shares the session's deployment: its orders are its own, it moves no clock."""
    return sharing(request)


NOTIFY = "/wechatpay/v3/notify"


@pytest.fixture
def wechat(deployment: Deployment) -> SpecWechat:
    return SpecWechat.from_keyset(deployment.root / "keys", DIRECT.mchid, PUBLIC_KEY_ID)


def new_order(deployment: Deployment, no: str, amount: int = 1000) -> str:
    deployment.faults(notifications="drop")  # only our signer speaks for WeChat here
    with deployment.client() as http:
        created = http.post(
            "/v1/orders",
            json={"merchant_order_no": no, "amount_fen": amount, "description": "奶茶", "channel": "native"},
        )
        assert created.status_code == 201, created.text
        return created.json()["payment"]["out_trade_no"]


def post(deployment: Deployment, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(deployment.ledger + NOTIFY, content=body, headers=headers, timeout=30)


def refused(deployment: Deployment) -> list[Any]:
    """The refusals as recorded in the event store (any worker may have taken the request)."""
    ledger = open_ledger(deployment.database_url)
    try:
        return Audit(ledger).refused_callbacks()
    finally:
        ledger.close()


def order(deployment: Deployment, no: str) -> dict[str, Any]:
    with deployment.client() as http:
        return http.get(f"/v1/orders/{no}").json()


def test_a_valid_callback_is_acknowledged_after_it_is_stored(deployment: Deployment, wechat: SpecWechat) -> None:
    otn = new_order(deployment, "CB-OK")
    body = wechat.body(
        "TRANSACTION.SUCCESS", paid_resource(DIRECT.mchid, DIRECT.appid, otn, 1000, "4200000000000000000000000011")
    )
    answer = post(deployment, body, wechat.headers(body))
    assert answer.status_code == 204 and answer.content == b""
    view = order(deployment, "CB-OK")  # stored before the 204: no waiting needed
    assert view["status"] == "PAID" and view["paid_fen"] == 1000


def test_twenty_concurrent_duplicates_change_the_ledger_once(deployment: Deployment, wechat: SpecWechat) -> None:
    otn = new_order(deployment, "CB-DUP")
    body = wechat.body(
        "TRANSACTION.SUCCESS", paid_resource(DIRECT.mchid, DIRECT.appid, otn, 1000, "4200000000000000000000000012")
    )
    headers = wechat.headers(body)
    barrier, statuses = threading.Barrier(20), []

    def deliver() -> None:
        barrier.wait()
        statuses.append(post(deployment, body, headers).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [204] * 20
    with deployment.client("auditor") as auditor:
        events = auditor.get("/v1/audit/orders/CB-DUP/history").json()["events"]
    kinds = [(e["aggregate"], e["type"]) for e in events]
    assert kinds.count(("Payment", "Paid")) == 1 and kinds.count(("Order", "Paid")) == 1
    assert kinds.count(("Payment", "Notified")) == 1


def _tampered(body: bytes) -> bytes:
    envelope = json.loads(body)
    ct = envelope["resource"]["ciphertext"]
    envelope["resource"]["ciphertext"] = ("A" if ct[0] != "A" else "B") + ct[1:]
    return json.dumps(envelope).encode()


def test_bad_callbacks_are_refused_recorded_and_change_nothing(deployment: Deployment, wechat: SpecWechat) -> None:
    otn = new_order(deployment, "CB-BAD")
    good = wechat.body(
        "TRANSACTION.SUCCESS", paid_resource(DIRECT.mchid, DIRECT.appid, otn, 1000, "4200000000000000000000000013")
    )
    merchant_key = serialization.load_pem_private_key(
        (deployment.root / "keys" / DIRECT.mchid / "apiclient_key.pem").read_bytes(), password=None
    )
    unknown = wechat.body(
        "TRANSACTION.SUCCESS",
        paid_resource(DIRECT.mchid, DIRECT.appid, "zbUNKNOWN0000000000000000001", 1000, "4200000000000000000000000014"),
    )
    wrong_mchid = wechat.body(
        "TRANSACTION.SUCCESS", paid_resource("1999999999", DIRECT.appid, otn, 1000, "4200000000000000000000000015")
    )
    probe_headers = wechat.headers(good) | {"Wechatpay-Signature": "WECHATPAY/SIGNTEST/9NJCZyEkV0PY7ynKqAW6zY3C"}
    cases = [
        ("forged signature", good, wechat.headers(good, key=merchant_key), 401),
        ("stale timestamp", good, wechat.headers(good, timestamp=int(time.time()) - 400), 401),
        ("signature probe", good, probe_headers, 401),
        ("tampered ciphertext", _tampered(good), wechat.headers(_tampered(good)), 401),
        ("unknown out_trade_no", unknown, wechat.headers(unknown), 400),
        ("wrong mchid", wrong_mchid, wechat.headers(wrong_mchid), 400),
        ("no headers", good, {"Content-Type": "application/json"}, 401),
    ]
    before = len(refused(deployment))
    for name, body, headers, status in cases:
        answer = post(deployment, body, headers)
        assert answer.status_code == status, name
        assert answer.json()["code"] == "FAIL" and answer.json()["message"], name
    recorded = refused(deployment)[before:]
    assert len(recorded) == len(cases)
    assert all(r.remote == "127.0.0.1" and r.path == NOTIFY and r.reason and r.headers for r in recorded)
    assert "SIGNTEST" in recorded[2].reason
    assert order(deployment, "CB-BAD")["status"] == "PAYING"


DEEP = b'{"a":' * 10_000 + b"1" + b"}" * 10_000  # valid JSON, nested 10,000 deep


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"not json",
        b"{}",
        b"[]",
        b'{"resource": 1}',
        b"\xff\xfe\x00",
        b"{" * 10000,
        DEEP,
        b"[" * 10_000 + b"]" * 10_000,
    ],
)
def test_junk_bodies_are_4xx_never_5xx(deployment: Deployment, wechat: SpecWechat, junk: bytes) -> None:
    answer = post(deployment, junk, wechat.headers(junk))
    assert 400 <= answer.status_code < 500
    answer = post(deployment, junk, {"Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500


def test_an_amount_mismatch_needs_review(deployment: Deployment, wechat: SpecWechat) -> None:
    otn = new_order(deployment, "CB-AMT", amount=1000)
    body = wechat.body(
        "TRANSACTION.SUCCESS", paid_resource(DIRECT.mchid, DIRECT.appid, otn, 1, "4200000000000000000000000016")
    )
    assert post(deployment, body, wechat.headers(body)).status_code == 204
    view = order(deployment, "CB-AMT")
    assert view["status"] == "NEEDS_REVIEW" and view["review_reasons"] == ["amount_mismatch"] and view["paid_fen"] == 1


@pytest.fixture(autouse=True)
def _reset_faults(deployment: Deployment) -> Any:
    yield
    deployment.faults(reset=True)


@pytest.mark.ha
def test_a_flood_of_forged_callbacks_is_counted_not_stored(deployment: Deployment, wechat: SpecWechat) -> None:
    """Last in this module: it uses up this source's refusals for the minute."""
    huge = b'{"x": "' + b"A" * 300_000 + b'"}'
    answer = post(deployment, huge, wechat.headers(huge))
    assert answer.status_code == 413 and answer.json()["code"] == "FAIL"
    kept = refused(deployment)[-1]
    assert kept.reason.startswith("body larger than") and len(kept.body) <= 4096 and len(kept.body_sha256) == 64

    before = len(refused(deployment))
    forged = b'{"id": "x", "padding": "' + b"B" * 20_000 + b'"}'
    headers = wechat.headers(forged) | {"Wechatpay-Signature": "Zm9yZ2Vk"}
    statuses = [post(deployment, forged, headers).status_code for _ in range(300)]
    # the limit is per source and minute: however the flood falls across minutes (a slow machine), each minute
    # keeps at most 60, and 300 refusals overflow at least one of them
    assert set(statuses) <= {401, 429} and 429 in statuses
    recorded = refused(deployment)[before:]
    per_minute = Counter(r.received_at.strftime("%Y-%m-%dT%H:%M") for r in recorded)
    assert recorded and max(per_minute.values()) <= 60, per_minute
    assert all(len(r.body) <= 4096 and r.body_bytes == len(forged) for r in recorded)
    assert sum(len(r.body) + len(json.dumps(r.headers)) for r in recorded) < 1_000_000  # was 66 MB for 300
    database = ViewDatabase(parse_url(deployment.database_url).in_schema(DIRECTORY_SCHEMA))  # deployment-wide
    try:
        counted = RefusalCounter(database).by_source()["127.0.0.1"]
    finally:
        database.close()
    assert counted >= 300 + 1  # every one counted, kept or not
    # a genuine callback is never throttled: only refusals are counted
    otn = new_order(deployment, "CB-AFTER-FLOOD")
    body = wechat.body(
        "TRANSACTION.SUCCESS", paid_resource(DIRECT.mchid, DIRECT.appid, otn, 1000, "4200000000000000000000000099")
    )
    assert post(deployment, body, wechat.headers(body)).status_code == 204
