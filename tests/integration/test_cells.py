"""Issue 27: the primary of one cell killed (SIGKILL, Patroni and PostgreSQL) under a storm of creates and callbacks.

The other cell's merchants notice nothing; the killed cell's get 503s until
Patroni promotes its synchronous standby, then 2xx again without a restart;
and everything that was acknowledged is there, every view equal to a
rebuild.  In ``make test-ha`` for now (about 75 s; ``make test`` is over its time budget already).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.cells import Storm, check_nothing_lost, cluster, deployed, longest_gap
from tests.deploy import Deployment
from zhangben.cluster import TTL, DevCluster


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevCluster, Deployment]]:
    root = tmp_path_factory.mktemp("cells")
    with cluster() as c, deployed(c, root) as d:
        yield c, d


@pytest.mark.ha
def test_a_primary_killed_under_the_storm_loses_nothing_and_the_other_cell_notices_nothing(
    cells: tuple[DevCluster, Deployment],
) -> None:
    c, d = cells
    cell_a = c.cell("a")
    victim = cell_a.primary()
    assert victim is not None
    storm = Storm(d)
    storm.start()
    time.sleep(3)
    killing = time.monotonic()
    c.kill(victim)
    killed_at = time.monotonic()  # what cell a is asked from now on meets a dead primary
    recovered_at = None
    deadline = killed_at + TTL + 15
    while time.monotonic() < deadline:
        after = [a for a in storm.on("a", killed_at) if a.status < 300]
        if after:
            recovered_at = min(a.at for a in after)
            break
        time.sleep(0.2)
    promoted = cell_a.primary()  # Patroni's view: the dead node's member key lapses with its leader key
    assert promoted is not None and promoted.name != victim.name, cell_a.members()
    c.start_node(victim)  # the lost machine comes back and rejoins as a replica
    time.sleep(3)
    ended = time.monotonic()  # asked to stop: cell a's last callbacks may still be retried until acknowledged
    storm.stop()

    assert storm.errors == []
    assert recovered_at is not None, f"cell a did not answer 2xx within {TTL + 15}s of its primary's death"
    b_answers = storm.on("b")
    assert {a.status for a in b_answers} <= {200, 201, 204}, [
        (a.what, round(a.at - killed_at, 1)) for a in b_answers if a.status >= 300
    ]
    gap_b = longest_gap(storm.on("b", killing - 5), killing, ended)
    assert gap_b <= 1.0, (
        f"cell b went {gap_b:.1f}s without an answer while cell a failed over: "
        f"{[(a.what, round(a.at - killed_at, 2)) for a in b_answers if a.at >= killed_at]}"
    )
    a_refused = [a for a in storm.on("a", killed_at) if a.status >= 300]
    assert {a.status for a in a_refused} <= {503}, sorted({a.status for a in a_refused})
    assert all(a.problem for a in a_refused)
    print(f"cell a back after {recovered_at - killed_at:.1f}s; cell b's longest gap {gap_b:.2f}s")
    check_nothing_lost(d, storm)
    assert cell_a.sync_standby() is not None  # what is acknowledged now is on two nodes again
