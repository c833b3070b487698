"""A database written before partitions, upgraded in place: ``db init`` moves it into partition 0, losing nothing.

``data/before-partitions.sql`` is a ``pg_dump`` of a deployment run by
``main`` before partitions existed (commit in ``before-partitions.json``,
with what its API answered then): three orders — paid, paid and refunded,
open — their feed, and a merchant's API key.  Restored into a fresh database
and started by today's code, the same key reads the same orders and the same
feed, the feed's cursor goes on, and new payments land after the old log's
last id.  ``data/before-partitions.db`` is a SQLite file written by the same
commit (a key and an order): SQLite stays one partition, read as it was.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import psycopg

from application.apikeys import ApiKeys
from application.orders import Orders
from bootstrap.ledger import open_directory, open_ledger
from bootstrap.partitioning import partition_states
from bootstrap.settings import Settings
from bootstrap.wiring import init_database
from domain.requests import OrderTerms
from tests.deploy import deploy
from zhangben.pgserver import ThrowawayPostgres

DATA = Path(__file__).parent / "data"
IDENTITY = ("merchant_order_no", "amount_fen", "description", "created_at", "mchid")


def restored(postgres: ThrowawayPostgres) -> str:
    url = postgres.create_database("upgrade")
    subprocess.run(
        [
            str(postgres.bindir / "psql"),
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-f",
            str(DATA / "before-partitions.sql"),
        ],
        check=True,
        capture_output=True,
    )
    return url


# the checkout's fields (issue 28) on an order created before they existed: its Created event upcast to them
CHECKOUT_UNSET = {"currency": "CNY", "user_id": None, "items": [], "return_url": None, "meta": None}


def test_a_database_of_before_partitions_is_moved_into_partition_0_and_reads_as_before(
    postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    before: dict[str, Any] = json.loads((DATA / "before-partitions.json").read_text())
    url = restored(postgres)
    with psycopg.connect(url) as conn:
        (old_head,) = conn.execute("SELECT max(notification_id) FROM public.ledger_events").fetchone() or (0,)
    with deploy(tmp_path, url) as d:  # `serve` runs `db init` first, as compose's migrate does
        old_key = httpx.Client(base_url=d.ledger, headers={"Authorization": f"Bearer {before['merchant_key']}"})
        with old_key as http:
            for no in ("OLD-PAID", "OLD-REFUNDED"):  # settled: exactly as they were, the checkout (issue 28) unset
                assert http.get(f"/v1/orders/{no}").json() == before["views"][no] | CHECKOUT_UNSET
            still_open = http.get("/v1/orders/OLD-OPEN").json()  # the jobs may have asked WeChat about it since
            assert {k: still_open[k] for k in IDENTITY} == {k: before["views"]["OLD-OPEN"][k] for k in IDENTITY}
            feed = http.get("/v1/events", params={"limit": 100}).json()
            old = before["feed"]["events"]
            assert feed["events"][: len(old)] == old  # the same events and ids (OLD-OPEN may have expired since)
            created = http.post(
                "/v1/orders",
                json={"merchant_order_no": "NEW-1", "amount_fen": 300, "description": "after", "channel": "native"},
            )
            assert created.status_code == 201, created.text
            d.pay(created.json()["payment"]["out_trade_no"])
            d.wait_status("NEW-1", "PAID")
            after = http.get("/v1/events", params={"after": before["feed"]["next_cursor"]}).json()["events"]
            new = [e for e in after if e["data"]["order"]["merchant_order_no"] == "NEW-1"]
            assert [e["type"] for e in new] == ["order.paid"]  # the old cursor goes on to what came after it
            assert {e["data"]["order"]["merchant_order_no"] for e in after} <= {"NEW-1", "OLD-OPEN"}
        ledger = open_ledger(url)
        try:
            ids = [n.id for n in ledger.recorder.select_notifications(1, 100_000)]
        finally:
            ledger.close()
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert ids[: ids.index(old_head) + 1] == list(range(1, old_head + 1))  # the old log kept whole
    assert ids[-1] > old_head  # and new events after it
    schemas = tables_by_schema(url)
    assert "public" not in schemas  # everything moved
    assert {"ledger_events", "ledger_events_head", "order_status", "business_events"} <= schemas["p000"]


def tables_by_schema(url: str) -> dict[str, set[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    found: dict[str, set[str]] = {}
    for schema, table in rows:
        found.setdefault(schema, set()).add(table)
    return found


def test_a_sqlite_database_of_before_partitions_is_partition_0_as_it_is(tmp_path: Path) -> None:
    """SQLite is one partition: ``db init`` adds the directory's tables to the file and moves nothing; the old
    key, order and log read as before (``data/before-partitions.db`` was written by the same commit)."""
    before = json.loads((DATA / "before-partitions-sqlite.json").read_text())
    db = tmp_path / "ledger.db"
    shutil.copy(DATA / "before-partitions.db", db)
    url = f"sqlite:///{db}"
    settings = Settings(config_path=tmp_path / "zhangben.toml", database_url=url)
    init_database(settings)
    with closing(open_directory(url)) as keys:
        who = ApiKeys(keys).authenticate(before["merchant_key"])
    assert who is not None and who.mchid == "1900000001"
    with closing(open_ledger(url)) as ledger:
        assert ledger.get_order("1900000001", before["order"]).amount_fen == 100
        Orders(ledger).create_order("1900000001", "NEW-SQLITE", OrderTerms(100, "after", "native"))
        ids = [n.id for n in ledger.recorder.select_notifications(1, 1000)]
    assert ids[: before["head"]] == list(range(1, before["head"] + 1)) and ids[-1] > before["head"]
    [state] = partition_states(settings)
    assert state.partition == 0 and state.head == ids[-1]
