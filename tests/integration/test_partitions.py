"""Partitions on PostgreSQL: ``db init`` makes a schema per partition and the directory, places merchants,
``zhangben partitions list|place`` show and place them, and a partition's inserts never wait for another's."""

from __future__ import annotations

import contextlib
import io
import os
import threading
from datetime import datetime
from pathlib import Path
from unittest.mock import patch

import psycopg
import pytest

from adapters.persistence import DIRECTORY_SCHEMA, parse_url, partition_schema
from adapters.wechatpay.beijing import BEIJING
from application.orders import Orders
from bootstrap.ledger import open_store
from bootstrap.partitioning import directory
from bootstrap.settings import Settings, SettingsError, load_settings
from bootstrap.wiring import build_runtimes, init_database
from domain.partitions import MerchantAlreadyPlaced, PartitionCountChanged, hashed_partition
from domain.requests import OrderTerms
from sandbox.keyset import DIRECT, PARTNER
from zhangben.cli import main
from zhangben.pgserver import ThrowawayPostgres

MERCHANTS = [{"mchid": "1900000001"}, {"mchid": "1900000100", "sub_mchid": "1900000109"}, {"mchid": "1900000002"}]


def configured(tmp_path: Path, url: str, partitions: int) -> dict[str, str]:
    config = tmp_path / "zhangben.toml"
    merchants = "".join(
        f'[[merchants]]\nmchid = "{m["mchid"]}"\n' + (f'sub_mchid = "{m["sub_mchid"]}"\n' if "sub_mchid" in m else "")
        for m in MERCHANTS
    )
    config.write_text(f"[partitioning]\npartitions = {partitions}\n\n{merchants}", encoding="utf-8")
    return {"ZHANGBEN_CONFIG": str(config), "ZHANGBEN_DATABASE_URL": url}


def zhangben(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with patch.dict(os.environ, env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_db_init_makes_each_partition_and_the_directory_and_places_the_merchants(
    postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    url = postgres.create_database("parts")
    env = configured(tmp_path, url, 4)
    assert zhangben(env, "db", "init")[0] == 0
    assert zhangben(env, "db", "init")[0] == 0  # again: nothing changes
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT schemaname, tablename FROM pg_tables").fetchall()
    tables: dict[str, set[str]] = {}
    for schema, table in rows:
        tables.setdefault(schema, set()).add(table)
    for p in range(4):
        assert {"ledger_events", "ledger_events_head", "order_status", "projection_tracking"} <= tables[f"p00{p}"]
    assert tables[DIRECTORY_SCHEMA] == {  # placements, the API keys' own log, deployment-wide counters
        "partition_map",
        "merchant_partitions",
        "ledger_events",
        "ledger_events_head",
        "throttles",
        "refused_callback_sources",
        "follower_leases",
        "follower_processes",
        "partition_moves",
    }
    assert "public" not in tables
    with directory(load_settings(env)) as partitions:
        placed = {p.merchant: (p.partition, p.placed_by) for p in partitions.directory.placements()}
    # a sub-merchant is placed under its own id, its provider's mchid is not a merchant of its own here
    assert placed == {m: (hashed_partition(m, 4), "hash") for m in ("1900000001", "1900000109", "1900000002")}

    code, out, _ = zhangben(env, "partitions", "place", "1900009999", "--partition", "3")
    assert code == 0 and "partition 3" in out
    assert zhangben(env, "partitions", "place", "1900009999", "--partition", "3")[0] == 0  # where it is: fine
    code, _, err = zhangben(env, "partitions", "place", "1900009999", "--partition", "1")
    assert code == 1 and "never moves" in err and err.count("\n") == 1
    code, _, err = zhangben(env, "partitions", "place", "1900009998", "--partition", "4")
    assert code == 1 and "partition 4 does not exist" in err

    code, out, _ = zhangben(env, "partitions", "list", "--merchants")
    assert code == 0
    lines = out.splitlines()
    assert any(line.split()[:3] == ["3", "p003", "main"] for line in lines)
    assert "1900009999" in out and "operator" in out

    # the number is fixed once chosen: merchants were placed by it
    more = configured(tmp_path, url, 5)
    code, _, err = zhangben(more, "db", "init")
    assert code == 1 and "made with 4 partition(s)" in err


def test_sqlite_holds_one_partition(tmp_path: Path) -> None:
    settings = Settings(config_path=tmp_path / "zhangben.toml", database_url=f"sqlite:///{tmp_path}/l.db", partitions=2)
    with pytest.raises(SettingsError, match="needs PostgreSQL"):
        init_database(settings)


@pytest.mark.parametrize(
    ("table", "message"),
    [("partitions = 0", "from 1 to 1000"), ("partitions = 1.5", "from 1 to 1000"), ("parts = 2", "no setting 'parts'")],
)
def test_partitioning_settings_are_checked(tmp_path: Path, table: str, message: str) -> None:
    config = tmp_path / "zhangben.toml"
    config.write_text(f"[partitioning]\n{table}\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=message):
        load_settings({"ZHANGBEN_CONFIG": str(config)})


def test_placing_is_refused_for_a_merchant_already_elsewhere(postgres: ThrowawayPostgres, tmp_path: Path) -> None:
    env = configured(tmp_path, postgres.create_database("place"), 2)
    init_database(load_settings(env))
    with directory(load_settings(env)) as partitions:
        where = partitions.partition_of("1900000001")
        with pytest.raises(MerchantAlreadyPlaced):
            partitions.place("1900000001", 1 - where)
        assert partitions.partition_of("1900007777") == hashed_partition("1900007777", 2)  # first use places it
        assert partitions.directory.placement("1900007777") is not None
    with pytest.raises(PartitionCountChanged):
        init_database(load_settings(configured(tmp_path, env["ZHANGBEN_DATABASE_URL"], 3)))


def test_a_partition_s_inserts_never_wait_for_another_partition_s(postgres: ThrowawayPostgres) -> None:
    """Partition 0's counter row held by an open transaction: partition 1 still commits at once; partition 0 waits."""
    store = parse_url(postgres.create_database("wait"))
    first = open_store(store.in_schema(partition_schema(0)), create_tables=True)
    second = open_store(store.in_schema(partition_schema(1)), create_tables=True)
    try:
        with psycopg.connect(store.raw) as holder:
            holder.execute("UPDATE p000.ledger_events_head SET last_id = last_id")  # locked until this rolls back
            Orders(second).create_order("1900000001", "OTHER-1", OrderTerms(100, "other", "native"))  # not blocked
            blocked = threading.Thread(
                target=lambda: Orders(first).create_order("1900000001", "SAME-1", OrderTerms(100, "same", "native"))
            )
            blocked.start()
            blocked.join(timeout=1.0)
            assert blocked.is_alive()  # partition 0's insert waits for its own counter
            holder.rollback()
        blocked.join(timeout=10)
        assert not blocked.is_alive()
        assert first.recorder.max_notification_id() and second.recorder.max_notification_id()
    finally:
        first.close()
        second.close()


def test_an_export_over_merchants_on_several_partitions_has_each_one_s_orders(
    postgres: ThrowawayPostgres, keyset: Path, tmp_path: Path
) -> None:
    """Finance reads that span merchants merge the partitions' answers: one file, every merchant's rows."""
    config = tmp_path / "zhangben.toml"
    config.write_text((keyset / "zhangben.toml").read_text(encoding="utf-8") + "\n[partitioning]\npartitions = 8\n")
    env = {"ZHANGBEN_CONFIG": str(config), "ZHANGBEN_DATABASE_URL": postgres.create_database("export")}
    init_database(load_settings(env))
    fleet = build_runtimes(load_settings(env))
    try:
        for merchant, no in ((DIRECT.key, "EX-DIRECT"), (PARTNER.key, "EX-PARTNER")):
            Orders(fleet.at(merchant).ledger).create_order(merchant, no, OrderTerms(100, "export", "native"))
        assert fleet.at(DIRECT.key).number != fleet.at(PARTNER.key).number
    finally:
        fleet.close()
    today = datetime.now(BEIJING).date().isoformat()
    out = tmp_path / "orders.csv"
    code, _, err = zhangben(env, "export", "orders", "--date", today, "--out", str(out))
    assert code == 0, err
    written = out.read_text(encoding="utf-8-sig")
    assert "EX-DIRECT" in written and "EX-PARTNER" in written
