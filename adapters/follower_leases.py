"""Which process follows which partition's log: a lease per partition in the directory, and a heartbeat per process.

Each partition's projections are followed by exactly one process at a time
(``projections.sharing``): it holds the partition's lease and renews it every
few seconds; a process that dies stops renewing, its leases lapse, and the
others take them.  Processes announce themselves in ``follower_processes``
so each knows how many share the work and takes its fair part.  Times are
the processes' own clocks, in whole milliseconds since the epoch: the
machines of one deployment keep NTP time, and a lease lasts many times any
skew between them.
"""

from __future__ import annotations

from adapters.viewdb import ViewDatabase

DDL = [
    "CREATE TABLE IF NOT EXISTS follower_leases (partition INTEGER PRIMARY KEY, holder TEXT, "
    "until_ms BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS follower_processes (holder TEXT PRIMARY KEY, seen_at_ms BIGINT NOT NULL)",
]


class FollowerLeases:
    """The lease rows, on the directory's connection."""

    def __init__(self, db: ViewDatabase) -> None:
        self.db = db

    def create_tables(self, partitions: int) -> None:
        for statement in DDL:
            self.db.execute(statement)
        self.db.executemany(
            "INSERT INTO follower_leases (partition, holder, until_ms) VALUES (?, NULL, 0) ON CONFLICT (partition) DO NOTHING",
            [(p,) for p in range(partitions)],
        )

    def beat(self, holder: str, now: int) -> None:
        """``holder`` is alive now."""
        self.db.execute(
            "INSERT INTO follower_processes (holder, seen_at_ms) VALUES (?, ?) "
            "ON CONFLICT (holder) DO UPDATE SET seen_at_ms = excluded.seen_at_ms",
            (holder, now),
        )

    def live(self, now: int, ttl: int) -> int:
        """How many processes share the following: those seen within ``ttl`` (the long gone are forgotten)."""
        self.db.execute("DELETE FROM follower_processes WHERE seen_at_ms < ?", (now - 10 * ttl,))
        return int(self.db.execute("SELECT count(*) FROM follower_processes WHERE seen_at_ms >= ?", (now - ttl,))[0][0])

    def renew(self, holder: str, now: int, ttl: int) -> set[int]:
        """Every lease ``holder`` still holds, extended to ``now + ttl`` (one that lapsed and was taken is gone)."""
        rows = self.db.execute(
            "UPDATE follower_leases SET until_ms = ? WHERE holder = ? AND until_ms >= ? RETURNING partition",
            (now + ttl, holder, now),
        )
        return {int(r[0]) for r in rows}

    def take(self, partition: int, holder: str, now: int, ttl: int) -> bool:
        """The partition's lease if it is free or lapsed (one process wins: the update is atomic)."""
        rows = self.db.execute(
            "UPDATE follower_leases SET holder = ?, until_ms = ? WHERE partition = ? AND (holder IS NULL OR until_ms < ?) "
            "RETURNING partition",
            (holder, now + ttl, partition, now),
        )
        return bool(rows)

    def free(self, now: int) -> list[int]:
        """Partitions nobody holds now, in order."""
        rows = self.db.execute(
            "SELECT partition FROM follower_leases WHERE holder IS NULL OR until_ms < ? ORDER BY partition", (now,)
        )
        return [int(r[0]) for r in rows]

    def release(self, holder: str, partitions: set[int]) -> None:
        """Give these leases back at once (holding more than its part), not after they lapse."""
        self.db.executemany(
            "UPDATE follower_leases SET holder = NULL, until_ms = 0 WHERE holder = ? AND partition = ?",
            [(holder, partition) for partition in sorted(partitions)],
        )

    def leave(self, holder: str) -> None:
        """A process stopping: every lease it holds given back, and it no longer counts as sharing."""
        self.db.execute("UPDATE follower_leases SET holder = NULL, until_ms = 0 WHERE holder = ?", (holder,))
        self.db.execute("DELETE FROM follower_processes WHERE holder = ?", (holder,))

    def holders(self, now: int) -> dict[int, str | None]:
        """Each partition's holder now (None: nobody)."""
        rows = self.db.execute("SELECT partition, holder, until_ms FROM follower_leases ORDER BY partition")
        return {int(p): (str(h) if h is not None and int(u) >= now else None) for p, h, u in rows}
