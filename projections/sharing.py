"""The partitions' projections shared among the processes that run them (``zhangben work``, ``serve``).

Every few seconds each process says it is alive, renews the leases it holds,
and takes or gives back leases until it holds its part: the partitions
divided by the processes alive, rounded up.  It runs the followers of the
partitions it holds (a ``Runner`` each: a partition's three projections read
each stretch of its log once, together — which is why the lease is the
partition's, and each (projection, partition) pair is then followed by one
process).  A process killed stops renewing; within ``TTL_MS`` its
leases lapse and the others take them.  Two processes that both believe they
hold a partition for a moment (one stalled past its lease) do no harm: a
batch is written with its position in one transaction, and a second write of
the same batch is refused (``projections.core.Follower``).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from adapters.follower_leases import FollowerLeases
from adapters.persistence import is_unavailable
from projections.core import Runner

log = logging.getLogger("zhangben.projections")

BEAT_MS = 2_000  # how often a process renews, and looks for leases to take or give back
TTL_MS = 6_000  # a lease not renewed for this long lapses: a killed process's partitions move within ~8 s


def now_ms() -> int:
    """This process's clock in whole milliseconds since the epoch (what the lease rows hold)."""
    return time.time_ns() // 1_000_000


class SharedFollowing:
    """This process's part of the partitions' projections, kept fair as processes come and go."""

    def __init__(
        self,
        leases: FollowerLeases,
        runner_for: Callable[[int], Runner],
        partitions: int,
        *,
        clock: Callable[[], int] = now_ms,
        beat: int = BEAT_MS,
        ttl: int = TTL_MS,
        paused: Callable[[int], bool] = lambda partition: False,
    ) -> None:
        self.leases = leases
        self.runner_for = runner_for
        self.partitions = partitions
        self.clock = clock
        self.beat = beat
        self.ttl = ttl
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.running: dict[int, Runner] = {}
        self.paused = paused  # a partition frozen for a move: its lease is kept, its projections wait
        self._stale: set[int] = set()  # partitions reopened on another cell: their runners start again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="projection-leases", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # supervised: an outage drops nothing; the leases lapse, the runners wait
                if is_unavailable(exc):
                    log.warning("projection leases: database unavailable; trying again in %d ms", self.beat)
                else:
                    log.exception("projection leases failed; trying again in %d ms", self.beat)
            self._stop.wait(self.beat / 1000)

    def tick(self) -> set[int]:
        """One round: alive, renew, take or give back to hold this process's part; returns the partitions held."""
        now = self.clock()
        self.leases.beat(self.holder, now)
        share = math.ceil(self.partitions / max(1, self.leases.live(now, self.ttl)))
        held = self.leases.renew(self.holder, now, self.ttl)
        if len(held) > share:  # more processes now: give back the highest, the newcomers take them
            extra = set(sorted(held)[share:])
            self.leases.release(self.holder, extra)
            held -= extra
        for partition in self.leases.free(now):
            if len(held) >= share:
                break
            if self.leases.take(partition, self.holder, now, self.ttl):
                held.add(partition)
        self._follow(held)
        return held

    def restart(self, partition: int) -> None:
        """``partition``'s runner starts again at the next beat, on the runtime it has then (after a move)."""
        self._stale.add(partition)

    def _follow(self, held: set[int]) -> None:
        stale, self._stale = self._stale, set()
        wanted = {partition for partition in held if not self.paused(partition)}
        for partition in (set(self.running) - wanted) | (stale & set(self.running)):
            self.running.pop(partition).stop()
            log.info("projections of partition %d: no longer followed here", partition)
        for partition in sorted(wanted - set(self.running)):
            runner = self.runner_for(partition)
            runner.start()
            self.running[partition] = runner
            log.info("projections of partition %d: followed here", partition)

    def stop(self) -> None:
        """Stop following and give every lease back at once, so the others need not wait for them to lapse."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for runner in self.running.values():
            runner.stop()
        self.running.clear()
        try:
            self.leases.leave(self.holder)
        except Exception as exc:  # noqa: BLE001 — stopping with the database down: the leases lapse by themselves
            log.warning("projection leases not given back (%s); they lapse in %d ms", exc, self.ttl)
