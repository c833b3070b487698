"""``zhangben partitions move``: partition 2 (V2's money) moved from cell a to cell b under a storm of creates and
callbacks, with ``serve --workers 2 --api-only`` and two ``zhangben work`` processes running.

V2's merchants get 503s (problem+json; WeChat's FAIL) for the few seconds of
the freeze and 2xx after it, from the new cell, without a restart; the other
cell's merchant notices nothing; every 201 and acknowledged callback is there;
every view equals a rebuild; the feed's cursor from before the move still
reads on, each event once and in order; the old copy is gone.

Two runs: cells as two databases of the test's own PostgreSQL (``make test``),
and two Patroni cells (``make test-ha``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.persistence import parse_url
from adapters.schema_copy import SchemaCopy
from bootstrap.partitioning import directory, partition_states
from bootstrap.settings import load_settings
from bootstrap.wiring import init_partition
from tests.cells import Storm, check_nothing_lost, cluster, deployed, longest_gap
from tests.deploy import PARTITIONS, Deployment, cli_in_process, deploy
from zhangben.pgserver import ThrowawayPostgres

MOVED = 2  # V2's partition (tests/unit/test_partition_ids.py), on cell a until moved


@pytest.fixture(scope="module")
def two_databases(postgres: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Cells ``a`` and ``b`` as two databases of one PostgreSQL: what a move does is the same."""
    root = tmp_path_factory.mktemp("move")
    urls = {cell: postgres.create_database(f"cell_{cell}") for cell in "ab"}
    lines = []
    for cell, url in urls.items():
        secret = root / f"cell-{cell}.url"
        secret.write_text(url, encoding="utf-8")
        secret.chmod(0o600)
        lines.append(f'[[cells]]\nname = "{cell}"\nurl_file = "{secret}"\n')
    extra = f"[partitioning]\npartitions = {PARTITIONS}\n\n" + "\n".join(lines)
    with deploy(root, urls["a"], workers=2, work=2, config_extra=extra) as d:
        d.faults(notifications="drop")  # the storm sends the callbacks itself, and reads each answer
        yield d


def test_a_partition_moved_under_the_storm_loses_nothing(two_databases: Deployment) -> None:
    moved_under_the_storm(two_databases)


@pytest.mark.ha
@pytest.mark.cells
def test_a_partition_moved_between_patroni_cells_under_the_storm(tmp_path: Path) -> None:
    with cluster() as c, deployed(c, tmp_path) as d:
        moved_under_the_storm(d)


def moved_under_the_storm(d: Deployment) -> None:
    cursor, before = feed(d)
    storm = Storm(d)
    storm.start()
    time.sleep(2)
    started = time.monotonic()
    done = cli_in_process(d, "partitions", "move", str(MOVED), "--to", "b")
    moved = time.monotonic()
    time.sleep(2)
    ended = time.monotonic()
    storm.stop()

    assert done.returncode == 0, done.stderr
    print(done.stdout.strip().splitlines()[-1], f"({len([a for a in storm.on('a') if a.status == 503])} 503s)")
    assert storm.errors == []
    on_b = storm.on("b")  # DIRECT's partition, on cell b all along
    assert {a.status for a in on_b} <= {200, 201, 204}, [(a.what, a.status) for a in on_b if a.status >= 300]
    noise = longest_gap(on_b, started - 2, started)  # the machine's own gaps, in the same storm (tests/cells.py)
    # the moved partition is frozen ~3 s: a gap of half that on the other one would mean it was held too.  Under
    # the parallel suite a loaded 2-core machine showed gaps of 1.09 s while b was never frozen (CI, issue 28)
    assert longest_gap(on_b, started, ended) <= max(1.5, 2 * noise)
    v2 = storm.on("a")  # V2's answers, its partition moving from a to b
    refused = [a for a in v2 if a.status >= 300]
    assert {a.status for a in refused} <= {503} and all(a.problem for a in refused), [
        (a.what, a.status) for a in refused
    ]
    assert [a for a in v2 if a.status < 300 and a.sent > moved], "V2 not answered from its new cell"
    check_nothing_lost(d, storm)

    states = {s.partition: s for s in partition_states(load_settings(d.env))}
    assert states[MOVED].database == "b"
    assert [s.partition for s in states.values() if s.database == "a"] == [0, 4, 6]
    assert schemas(d, "a") & {"p002"} == set(), "the old copy is dropped"
    listed = cli_in_process(d, "partitions", "list", "--moves").stdout
    assert "done" in listed and "frozen" in listed  # the move's row: how long it was frozen

    _, after = feed(d, cursor)  # the cursor of before the move reads on: each event once, in order
    ids = [e["id"] for e in after]
    assert len(ids) == len(set(ids)) and not set(ids) & {e["id"] for e in before}
    paid = {e["merchant_order_no"] for e in after if e["type"] == "order.paid"}
    assert storm.paid["v2"] <= paid


def feed(d: Deployment, after: str | None = None) -> tuple[str | None, list[dict[str, Any]]]:
    """V2's business events after ``after``, every page; with the cursor to read on from."""
    events: list[dict[str, Any]] = []
    with d.client("v2") as http:
        while True:
            page = http.get("/v1/events", params={"limit": 500} | ({"after": after} if after else {}))
            assert page.status_code == 200, page.text
            events += page.json()["events"]
            if not page.json()["events"]:
                return after, events
            after = page.json()["next_cursor"]


def schemas(d: Deployment, cell: str) -> set[str]:
    url = next(c.url for c in load_settings(d.env).cells if c.name == cell)
    with psycopg.connect(url) as conn:
        return {str(r[0]) for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}


def test_a_move_cut_off_while_frozen_is_given_up_by_hand(two_databases: Deployment) -> None:
    """The move's command killed after the freeze: the partition stays frozen (its merchants 503, its old copy
    refusing writes) until ``--give-up``, which leaves it where it was, taking writes, with nothing left over."""
    d, partition, schema = two_databases, 4, "p004"
    settings = load_settings(d.env)
    with directory(settings) as partitions:
        placements = partitions.directory
        assert placements.databases()[partition] == (schema, "a")
        source, target = (parse_url(c.url).in_schema(schema) for c in settings.cells)
        copy = SchemaCopy(source, target, schema, "cutoff")
        placements.begin_move("cutoff", partition, "a", "b", datetime.now(UTC))
        init_partition(settings, target)
        copy.prepare_target()
        copy.publish()
        copy.subscribe()
        copy.wait_copied(60)
        placements.freeze_move("cutoff")
        copy.freeze()  # ... and here the command dies
    touch = "UPDATE p004.projection_tracking SET position = position"
    with psycopg.connect(source_url(settings)) as conn, pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        conn.execute(touch)
    again = cli_in_process(d, "partitions", "move", str(partition), "--to", "b")
    assert again.returncode != 0 and "being moved already (move cutoff)" in again.stderr

    undone = cli_in_process(d, "partitions", "move", str(partition), "--give-up")
    assert undone.returncode == 0, undone.stderr
    with psycopg.connect(source_url(settings)) as conn:
        conn.execute(touch)  # writes taken again
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
    assert schema not in schemas(d, "b")
    states = {s.partition: s.database for s in partition_states(settings)}
    assert states[partition] == "a"
    assert "failed" in cli_in_process(d, "partitions", "list", "--moves").stdout


def source_url(settings: Any) -> str:
    return str(settings.cells[0].url)
