"""A deployment's read models, every partition's, on whichever cell it lives: caught up, snapshotted, and
compared with a rebuild from the log (the followers' and the cells' fault tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

from adapters.viewdb import ViewDatabase
from bootstrap.partitioning import directory, partition_states
from bootstrap.settings import load_settings
from bootstrap.wiring import partition_stores
from tests.deploy import PARTITIONS, Deployment, run_cli

TABLES = {
    "order_status": "SELECT order_id, status, amount_fen, paid_fen, refunded_fen, version, view FROM order_status",
    "journal_lines": "SELECT * FROM journal_lines",
    "business_events": "SELECT * FROM business_events",
}
PROJECTIONS = ("order_status", "journal", "business_events")


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.2)
    return found


def current(d: Deployment) -> bool:
    """Every projection of every partition has read its log to the end (what `partitions list` shows)."""
    states = partition_states(load_settings(d.env))
    return len(states) == PARTITIONS and all(lag == 0 for state in states for lag in state.lag.values())


def snapshot(d: Deployment) -> dict[str, list[tuple[Any, ...]]]:
    settings = load_settings(d.env)
    with directory(settings) as partitions:
        stores = partition_stores(settings, partitions.directory.databases())
    views: dict[str, list[tuple[Any, ...]]] = {}
    for partition, store in stores.items():
        with closing(ViewDatabase(store)) as db:
            for name, query in TABLES.items():
                views[f"{partition}:{name}"] = sorted(tuple(r) for r in db.execute(query))
    return views


def equal_to_a_rebuild(d: Deployment) -> dict[str, list[tuple[Any, ...]]]:
    """Once caught up, every view of every partition equals a replay of its log; returns what was followed."""
    wait_for(lambda: current(d), 60, "every partition's projections to catch up")
    followed = snapshot(d)
    for name in PROJECTIONS:
        run_cli(d, "projections", "rebuild", name)
    wait_for(lambda: current(d), 60, "the rebuilt projections to be current")
    assert snapshot(d) == followed
    return followed
