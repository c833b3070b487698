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
from domain.partitions import PartitionCountChanged, Placement, check_partition

DDL = [
    "CREATE TABLE IF NOT EXISTS partition_map (partition INTEGER PRIMARY KEY, schema_name TEXT NOT NULL, "
    "database TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS merchant_partitions (merchant TEXT PRIMARY KEY, partition INTEGER NOT NULL, "
    "placed_by TEXT NOT NULL, placed_at TEXT NOT NULL)",
]
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
