"""The directory: what is not one merchant's money, kept once for the whole deployment.

On PostgreSQL it is the ``directory`` schema (each partition is a schema of
its own: ``adapters.schemas``); on SQLite, tables of the one file.  It holds
the partitions (and, for each, the database it lives in) and every
merchant's placement.  The number of partitions is written once, by the
first ``db init``; a later one with another number is refused, because the
merchants placed by hash were placed by that number.
"""

from __future__ import annotations

from datetime import datetime

from adapters.viewdb import ViewDatabase, sortable
from domain.partitions import MoveUnderWay, PartitionCountChanged, Placement, check_partition

DDL = [
    "CREATE TABLE IF NOT EXISTS partition_map (partition INTEGER PRIMARY KEY, schema_name TEXT NOT NULL, "
    "database TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS merchant_partitions (merchant TEXT PRIMARY KEY, partition INTEGER NOT NULL, "
    "placed_by TEXT NOT NULL, placed_at TEXT NOT NULL)",
    # ``zhangben partitions move``: one row per move, kept (who moved what, when, and how it ended); a partition
    # whose move is ``frozen`` takes no writes anywhere (every process answers its merchants 503 meanwhile)
    "CREATE TABLE IF NOT EXISTS partition_moves (move TEXT PRIMARY KEY, partition INTEGER NOT NULL, "
    "from_cell TEXT NOT NULL, to_cell TEXT NOT NULL, state TEXT NOT NULL, started_at TEXT NOT NULL, "
    "finished_at TEXT, note TEXT NOT NULL DEFAULT '')",
]
MOVING, FROZEN, DONE, FAILED = "copying", "frozen", "done", "failed"
HOME_DATABASE = "main"  # the deployment's own database (ZHANGBEN_DATABASE_URL); with [[cells]], the first cell


class Directory:
    """Partitions and placements, read and written through the directory's own connection."""

    def __init__(self, db: ViewDatabase) -> None:
        self.db = db

    def create_tables(self) -> None:
        for statement in DDL:
            self.db.execute(statement)

    def fix_partitions(self, partitions: int, schema_of: dict[int, str], cells: list[str] | None = None) -> None:
        """Record the deployment's partitions on its first ``db init``, dealt over ``cells`` in turn (partition
        *p* on cell *p* mod the cells; ``main`` when none are named); afterwards, check the number is the same.
        A cell named later gets partitions by ``zhangben partitions move``."""
        cells = cells or [HOME_DATABASE]
        with self.db.transaction():
            stored = self.partition_count()
            if stored and stored != partitions:
                raise PartitionCountChanged(stored, partitions)
            if not stored:
                self.db.executemany(
                    "INSERT INTO partition_map (partition, schema_name, database) VALUES (?, ?, ?)",
                    [(p, schema_of[p], cells[p % len(cells)]) for p in range(partitions)],
                )

    def partition_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM partition_map")[0][0])

    def databases(self) -> dict[int, tuple[str, str]]:
        """Each partition's (schema, database)."""
        rows = self.db.execute("SELECT partition, schema_name, database FROM partition_map ORDER BY partition")
        return {int(p): (str(schema), str(database)) for p, schema, database in rows}

    def cells_now(self) -> dict[int, tuple[str, str, str | None]]:
        """Each partition's schema and cell, and the cell it is frozen to move to (None: it takes writes): what
        every process polls to follow a move (``bootstrap.wiring.Runtimes.follow``)."""
        rows = self.db.execute(
            "SELECT m.partition, m.schema_name, m.database, v.to_cell FROM partition_map m "
            "LEFT JOIN partition_moves v ON v.partition = m.partition AND v.state = ? ORDER BY m.partition",
            (FROZEN,),
        )
        return {int(p): (str(schema), str(cell), None if to is None else str(to)) for p, schema, cell, to in rows}

    def begin_move(self, move: str, partition: int, from_cell: str, to_cell: str, at: datetime) -> None:
        """A move starts copying; refused while another move of the same partition is unfinished."""
        with self.db.transaction():
            busy = self.db.execute(
                "SELECT move FROM partition_moves WHERE partition = ? AND state IN (?, ?)", (partition, MOVING, FROZEN)
            )
            if busy:
                raise MoveUnderWay(f"partition {partition} is being moved already (move {busy[0][0]})")
            self.db.execute(
                "INSERT INTO partition_moves (move, partition, from_cell, to_cell, state, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (move, partition, from_cell, to_cell, MOVING, sortable(at)),
            )

    def unfinished_move(self, partition: int) -> tuple[str, str, str] | None:
        """The move of ``partition`` under way (or cut off: its process died), as (move, from, to)."""
        rows = self.db.execute(
            "SELECT move, from_cell, to_cell FROM partition_moves WHERE partition = ? AND state IN (?, ?)",
            (partition, MOVING, FROZEN),
        )
        return (str(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    def freeze_move(self, move: str) -> None:
        self.db.execute("UPDATE partition_moves SET state = ? WHERE move = ?", (FROZEN, move))

    def finish_move(self, move: str, partition: int, to_cell: str, at: datetime, note: str) -> None:
        """The map flipped and the freeze lifted in one transaction: every process sees both at once."""
        with self.db.transaction():
            self.db.execute("UPDATE partition_map SET database = ? WHERE partition = ?", (to_cell, partition))
            self.db.execute(
                "UPDATE partition_moves SET state = ?, finished_at = ?, note = ? WHERE move = ?",
                (DONE, sortable(at), note, move),
            )

    def fail_move(self, move: str, at: datetime, note: str) -> None:
        """The move given up: the partition stays where it was and takes writes again."""
        self.db.execute(
            "UPDATE partition_moves SET state = ?, finished_at = ?, note = ? WHERE move = ?",
            (FAILED, sortable(at), note[:500], move),
        )

    def moves(self) -> list[tuple[str, int, str, str, str, str, str | None, str]]:
        """Every move, oldest first: (move, partition, from, to, state, started, finished, note)."""
        rows = self.db.execute(
            "SELECT move, partition, from_cell, to_cell, state, started_at, finished_at, note FROM partition_moves "
            "ORDER BY started_at"
        )
        return [
            (str(m), int(p), str(f), str(t), str(s), str(a), None if b is None else str(b), str(n))
            for m, p, f, t, s, a, b, n in rows
        ]

    def place(self, merchant: str, partition: int, placed_by: str, at: datetime) -> Placement:
        """Place ``merchant`` unless it is placed already: the placement that holds, new or old."""
        check_partition(partition, self.partition_count())
        self.db.execute(
            "INSERT INTO merchant_partitions (merchant, partition, placed_by, placed_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (merchant) DO NOTHING",
            (merchant, partition, placed_by, sortable(at)),
        )
        placed = self.placement(merchant)  # just written, or written before
        if placed is None:
            raise LookupError(f"merchant {merchant} was placed and is not found")  # the row above is never deleted
        return placed

    def placement(self, merchant: str) -> Placement | None:
        rows = self.db.execute(
            "SELECT merchant, partition, placed_by, placed_at FROM merchant_partitions WHERE merchant = ?", (merchant,)
        )
        return _placement(rows[0]) if rows else None

    def placements(self) -> list[Placement]:
        rows = self.db.execute(
            "SELECT merchant, partition, placed_by, placed_at FROM merchant_partitions ORDER BY partition, merchant"
        )
        return [_placement(row) for row in rows]


def _placement(row: tuple[object, ...]) -> Placement:
    merchant, partition, placed_by, placed_at = row
    return Placement(
        str(merchant),
        int(str(partition)),
        str(placed_by),
        datetime.fromisoformat(str(placed_at).replace("Z", "+00:00")),
    )
