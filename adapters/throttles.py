"""A claim at most once per interval, shared by every worker and process through the view database.

``serve --workers N`` runs N processes, each with its own platform-key cache:
a cool-down kept in memory lets each of them call WeChat once, and a flood of
forged ``Wechatpay-Serial`` values would become N certificate downloads a
minute per merchant.  The claim is one atomic upsert, so of any number of
concurrent callers exactly one wins per interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from adapters.viewdb import ViewDatabase

DDL = ["CREATE TABLE IF NOT EXISTS throttles (name TEXT PRIMARY KEY, next_ms BIGINT NOT NULL)"]
CLAIM = (
    "INSERT INTO throttles (name, next_ms) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET next_ms = excluded.next_ms WHERE throttles.next_ms <= ? RETURNING name"
)


class SharedThrottle:
    def __init__(self, db: ViewDatabase, wall_clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.wall_clock = wall_clock

    def create_tables(self) -> None:
        for statement in DDL:
            self.db.execute(statement)

    def claim(self, name: str, every_seconds: float) -> bool:
        """True for the first caller in each ``every_seconds`` for ``name``, in any process; False for the rest."""
        now_ms = int(self.wall_clock() * 1000)
        return bool(self.db.execute(CLAIM, (name[:200], now_ms + int(every_seconds * 1000), now_ms)))
