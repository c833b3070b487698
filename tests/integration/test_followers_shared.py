"""Eight partitions followed by three ``zhangben work`` processes; one SIGKILLed while money keeps coming in.

The survivors take its partitions within seconds (its leases lapse), every
payment and refund reaches the views, and each projection of each partition
equals a rebuild from its log afterwards: nothing was lost or counted twice
while two processes could, for a moment, both have been writing a batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from adapters.follower_leases import FollowerLeases
from adapters.persistence import DIRECTORY_SCHEMA, parse_url, partition_schema
from adapters.viewdb import ViewDatabase
from bootstrap.partitioning import partition_states
from bootstrap.settings import load_settings
from projections.sharing import now_ms
from tests.deploy import PARTITIONS, Deployment, deploy, run_cli
from zhangben.pgserver import ThrowawayPostgres

# the test merchants' keys and the partitions they are hashed onto (tests/unit/test_partition_ids.py pins them)
ROLES = {"merchant": 7, "partner": 6, "v2": 2, "v2_partner": 0}
TABLES = {
    "order_status": "SELECT order_id, status, amount_fen, paid_fen, refunded_fen, version, view FROM order_status",
    "journal_lines": "SELECT * FROM journal_lines",
    "business_events": "SELECT * FROM business_events",
}


def holders(d: Deployment) -> dict[int, str | None]:
    with closing(ViewDatabase(parse_url(d.database_url).in_schema(DIRECTORY_SCHEMA))) as db:
        return FollowerLeases(db).holders(now_ms())


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.2)
    return found


def divided(d: Deployment, processes: int) -> dict[int, str | None] | None:
    """The leases, once every partition is held and ``processes`` processes hold them, none more than its part."""
    now = holders(d)
    held = [h for h in now.values() if h is not None]
    if len(held) != PARTITIONS or len(set(held)) != processes:
        return None
    part = -(-PARTITIONS // processes)
    return now if all(held.count(h) <= part for h in set(held)) else None


def current(d: Deployment) -> bool:
    """Every projection of every partition has read its log to the end (what `partitions list` shows)."""
    states = partition_states(load_settings(d.env))
    return len(states) == PARTITIONS and all(lag == 0 for state in states for lag in state.lag.values())


def snapshot(d: Deployment) -> dict[str, list[tuple[Any, ...]]]:
    store = parse_url(d.database_url)
    views: dict[str, list[tuple[Any, ...]]] = {}
    for partition in range(PARTITIONS):
        with closing(ViewDatabase(store.in_schema(partition_schema(partition)))) as db:
            for name, query in TABLES.items():
                views[f"{partition}:{name}"] = sorted(tuple(r) for r in db.execute(query))
    return views


def pay_and_refund(d: Deployment, role: str, no: str) -> None:
    with d.client(role) as http:
        body = {"merchant_order_no": no, "amount_fen": 300, "description": "茶", "channel": "native"}
        created = http.post("/v1/orders", json=body)
        assert created.status_code == 201, created.text
        d.pay(created.json()["payment"]["out_trade_no"])
        d.wait_status(no, "PAID", timeout=30, role=role)
        refund = http.post(f"/v1/orders/{no}/refunds", json={"out_refund_no": f"{no}-R", "amount_fen": 100})
        assert refund.status_code == 202, refund.text


@pytest.mark.ha  # a minute of three `work` processes and a SIGKILL: `make test-ha`
def test_a_killed_work_process_s_partitions_are_taken_over_and_every_view_equals_a_rebuild(
    postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    extra = f"[partitioning]\npartitions = {PARTITIONS}\n"
    with deploy(tmp_path, postgres.create_database("shared"), workers=2, work=True, config_extra=extra) as d:
        for _ in range(2):  # three `zhangben work` processes in all
            d.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "zhangben.cli", "work"],
                    env=d.env,
                    cwd=d.root,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        before = wait_for(lambda: divided(d, 3), 30, "three processes to share the eight partitions")
        stop, done, failures = threading.Event(), [0], []

        def keep_paying(role: str) -> None:
            i = 0
            while not stop.is_set():
                try:
                    pay_and_refund(d, role, f"SH-{role}-{i}")
                    done[0] += 1
                except Exception as exc:
                    failures.append(exc)
                    return
                i += 1

        writers = [threading.Thread(target=keep_paying, args=(role,)) for role in ROLES]
        for writer in writers:
            writer.start()
        time.sleep(2)
        victim = before[ROLES["merchant"]]  # the process following the direct merchant's partition
        assert victim is not None
        pid = int(victim.split(":")[1])
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        after = wait_for(lambda: divided(d, 2), 20, "the two survivors to take every partition")
        taken_over = time.monotonic() - killed_at
        assert victim not in after.values()
        time.sleep(2)  # money still coming in after the takeover
        stop.set()
        for writer in writers:
            writer.join(timeout=60)
        assert failures == [] and done[0] >= len(ROLES)
        for role in ROLES:  # every refund through to the views
            last = f"SH-{role}-0"
            d.wait_status(last, "PARTIALLY_REFUNDED", timeout=30, role=role)
        wait_for(lambda: current(d), 30, "every partition's projections to catch up")
        followed = snapshot(d)
        run_cli(d, "projections", "rebuild", "order_status")
        run_cli(d, "projections", "rebuild", "journal")
        run_cli(d, "projections", "rebuild", "business_events")
        wait_for(lambda: current(d), 30, "the rebuilt projections to be current")
        assert snapshot(d) == followed
        assert sum(len(rows) for name, rows in followed.items() if name.endswith("order_status")) >= done[0]
    assert taken_over < 12  # a lease lapses 6 s after its last renewal; the survivors look every 2 s
