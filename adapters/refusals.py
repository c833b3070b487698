"""Refused callbacks counted per source and minute, in the view database (shared by every worker).

Every refusal is counted; only the first ``limit`` a minute from one source are
kept as events (the rest are answered 429 and counted), so a flood of forged
callbacks costs a counter update each, not a stored record each.
"""

from __future__ import annotations

from datetime import datetime

from adapters.viewdb import ViewDatabase

DDL = [
    "CREATE TABLE IF NOT EXISTS refused_callback_sources (source TEXT NOT NULL, minute TEXT NOT NULL, "
    "refused BIGINT NOT NULL, PRIMARY KEY (source, minute))",
]


class RefusalCounter:
    def __init__(self, db: ViewDatabase, limit_per_minute: int = 60) -> None:
        self.db = db
        self.limit_per_minute = limit_per_minute

    def create_tables(self) -> None:
        for statement in DDL:
            self.db.execute(statement)

    def count(self, source: str, now: datetime) -> int:
        """Count one more refusal from ``source`` in this minute; how many there are now (atomic, any worker)."""
        rows = self.db.execute(
            "INSERT INTO refused_callback_sources (source, minute, refused) VALUES (?, ?, 1) "
            "ON CONFLICT (source, minute) DO UPDATE SET refused = refused_callback_sources.refused + 1 "
            "RETURNING refused",
            (source[:64], now.strftime("%Y-%m-%dT%H:%M")),
        )
        return int(rows[0][0])

    def within_limit(self, source: str, now: datetime) -> bool:
        return self.count(source, now) <= self.limit_per_minute

    def by_source(self) -> dict[str, int]:
        """Every refusal ever counted, per source: for auditors and the metrics."""
        rows = self.db.execute("SELECT source, SUM(refused) FROM refused_callback_sources GROUP BY source")
        return {str(source): int(total) for source, total in rows}
