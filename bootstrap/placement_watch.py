"""Each process follows ``zhangben partitions move`` by itself: it polls the directory's partition map.

A partition frozen for a move answers 503 in this process within a poll; a
partition whose cell changed is reopened on its new cell (its runtime built
again, its projections, jobs and deliveries restarted by their listeners,
``Runtimes.moved``).  Only a deployment of several cells polls: a move needs
two.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from adapters.directory import Directory
from adapters.persistence import DIRECTORY_SCHEMA, parse_url
from adapters.viewdb import ViewDatabase
from bootstrap.polling import poll
from bootstrap.wiring import Runtimes

log = logging.getLogger("zhangben.partitions")
WATCH_SECONDS = 1.0  # how soon a process sees a freeze or a flip (the move waits twice this before it relies on it)


def watch_moves(fleet: Runtimes, interval: float = WATCH_SECONDS) -> Callable[[], None]:
    """Start following the partition map on a thread of its own (none for one cell); returns how to stop it."""
    if len(fleet.settings.cells) < 2:
        return lambda: None
    # a connection of its own: a poll that hangs on a frozen primary holds no one else's (requests share the
    # directory's other connection)
    own = ViewDatabase(parse_url(fleet.settings.database_url).in_schema(DIRECTORY_SCHEMA))
    directory = Directory(own)
    stop = poll("partition-map", interval, lambda: fleet.follow(directory.cells_now()), log, "partition map")

    def stopped() -> None:
        stop()
        own.close()

    return stopped
