"""Eight partitions followed by three ``zhangben work`` processes; one SIGKILLed while money keeps coming in.

The survivors take its partitions within seconds (its leases lapse), every
payment and refund reaches the views, and each projection of each partition
equals a rebuild from its log afterwards: nothing was lost or counted twice
while two processes could, for a moment, both have been writing a batch.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from adapters.follower_leases import FollowerLeases
from adapters.persistence import DIRECTORY_SCHEMA, parse_url
from adapters.viewdb import ViewDatabase
from projections.sharing import now_ms
from tests.deploy import PARTITIONS, Deployment, deploy
from tests.views import equal_to_a_rebuild, wait_for
from zhangben.pgserver import ThrowawayPostgres

# the test merchants' keys and the partitions they are hashed onto (tests/unit/test_partition_ids.py pins them)
ROLES = {"merchant": 7, "partner": 6, "v2": 2, "v2_partner": 0}


def holders(d: Deployment) -> dict[int, str | None]:
    with closing(ViewDatabase(parse_url(d.database_url).in_schema(DIRECTORY_SCHEMA))) as db:
        return FollowerLeases(db).holders(now_ms())


def divided(d: Deployment, processes: int) -> dict[int, str | None] | None:
    """The leases, once every partition is held and ``processes`` processes hold them, none more than its part."""
    now = holders(d)
    held = [h for h in now.values() if h is not None]
    if len(held) != PARTITIONS or len(set(held)) != processes:
        return None
    part = -(-PARTITIONS // processes)
    return now if all(held.count(h) <= part for h in set(held)) else None


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
    with deploy(tmp_path, postgres.create_database("shared"), workers=2, work=3, config_extra=extra) as d:
        before = wait_for(lambda: divided(d, 3), 30, "three processes to share the eight partitions")
        stop, done, failures, last = threading.Event(), [0], [], {}

        def keep_paying(role: str) -> None:
            i = 0
            while not stop.is_set():
                try:
                    pay_and_refund(d, role, f"SH-{role}-{i}")
                    last[role] = f"SH-{role}-{i}"
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
        for role in ROLES:  # every refund through to the views: the last asked is the last to settle
            d.wait_status(last[role], "PARTIALLY_REFUNDED", timeout=30, role=role)
        followed = equal_to_a_rebuild(d)
        assert sum(len(rows) for name, rows in followed.items() if name.endswith("order_status")) >= done[0]
    assert taken_over < 12  # a lease lapses 6 s after its last renewal; the survivors look every 2 s
