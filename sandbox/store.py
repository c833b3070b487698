"""The sandbox's state in its own SQLite file: restart it and nothing is lost.

Documents are JSON by (kind, key), with aliases for secondary keys
(``transaction_id``, ``code_url``).  One lock serialises read-modify-write
sequences; the sandbox is a single process.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class SandboxStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS objects (kind TEXT, key TEXT, data TEXT NOT NULL, PRIMARY KEY (kind, key));
            CREATE TABLE IF NOT EXISTS aliases (kind TEXT, alias TEXT, key TEXT NOT NULL, PRIMARY KEY (kind, alias));
            CREATE TABLE IF NOT EXISTS deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT NOT NULL);
            """
        )
        self.lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lock and one SQLite transaction for a read-modify-write."""
        with self.lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        with self.lock:
            row = self._conn.execute("SELECT data FROM objects WHERE kind=? AND key=?", (kind, key)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, kind: str, key: str, data: dict[str, Any]) -> None:
        with self.lock:
            self._conn.execute(
                "INSERT INTO objects (kind, key, data) VALUES (?, ?, ?) "
                "ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data",
                (kind, key, json.dumps(data, ensure_ascii=False)),
            )

    def delete(self, kind: str, key: str) -> None:
        with self.lock:
            self._conn.execute("DELETE FROM objects WHERE kind=? AND key=?", (kind, key))

    def alias(self, kind: str, alias: str, key: str) -> None:
        with self.lock:
            self._conn.execute("INSERT OR REPLACE INTO aliases (kind, alias, key) VALUES (?, ?, ?)", (kind, alias, key))

    def by_alias(self, kind: str, alias: str) -> dict[str, Any] | None:
        with self.lock:
            row = self._conn.execute(
                "SELECT o.data FROM aliases a JOIN objects o ON o.kind = a.kind AND o.key = a.key "
                "WHERE a.kind=? AND a.alias=?",
                (kind, alias),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def all(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            rows = self._conn.execute("SELECT data FROM objects WHERE kind=? ORDER BY rowid", (kind,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def log_delivery(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self._conn.execute("INSERT INTO deliveries (data) VALUES (?)", (json.dumps(entry, ensure_ascii=False),))

    def deliveries(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = self._conn.execute("SELECT data FROM deliveries ORDER BY seq").fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        with self.lock:
            self._conn.close()
