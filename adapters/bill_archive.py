"""Every bill file the ledger imported, kept compressed with its SHA-1, so the reconciliation can be redone.

The reconciliation's tables are a read model of two sources: the event log
(what the ledger recorded) and WeChat's bills (what WeChat says happened).
The log is kept forever; this archive keeps the other source, as it arrived:
gzip-compressed, under the SHA-1 of its content — the hash WeChat gave for the
file, which the download was checked against (docs/wechatpay-protocol.md §4.7),
also named by the day's ``DailyBill.Imported`` event.  ``zhangben projections
rebuild reconciliation`` reads the files back from here.
"""

from __future__ import annotations

import gzip
import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

from adapters.viewdb import ViewDatabase, sortable

COMPRESSION = 6  # gzip's default: a million-line bill (~150 MB) keeps in ~15 MB


def _ddl(blob: str) -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS bill_files (mchid TEXT NOT NULL, bill_date TEXT NOT NULL, sha1 TEXT NOT NULL, "
        f"kept_at TEXT NOT NULL, size BIGINT NOT NULL, gz {blob} NOT NULL, PRIMARY KEY (mchid, bill_date, sha1))"
    ]


class BillArchive:
    def __init__(self, db: ViewDatabase) -> None:
        self.db = db

    def create_tables(self) -> None:
        for statement in _ddl("BYTEA" if self.db.kind == "postgres" else "BLOB"):
            self.db.execute(statement)

    def keep(self, mchid: str, bill_date: date, sha1: str, content: bytes | Path, now: datetime) -> None:
        """The file, compressed (streaming from a path); the same file again is kept once."""
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=COMPRESSION, mtime=0) as packed:
            if isinstance(content, bytes):
                packed.write(content)
                size = len(content)
            else:
                with content.open("rb") as source:
                    shutil.copyfileobj(source, packed, 1 << 20)
                size = content.stat().st_size
        self.db.execute(
            "INSERT INTO bill_files (mchid, bill_date, sha1, kept_at, size, gz) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (mchid, bill_date, sha1) DO NOTHING",
            (mchid, bill_date.isoformat(), sha1, sortable(now), size, buffer.getvalue()),
        )

    def has(self, mchid: str, bill_date: date, sha1: str) -> bool:
        return bool(
            self.db.execute(
                "SELECT 1 FROM bill_files WHERE mchid = ? AND bill_date = ? AND sha1 = ?",
                (mchid, bill_date.isoformat(), sha1),
            )
        )

    @contextmanager
    def lines(self, mchid: str, bill_date: date, sha1: str) -> Iterator[Iterator[str]]:
        """The kept file's lines, decompressed as they are read (``KeyError`` if it was never kept)."""
        rows = self.db.execute(
            "SELECT gz FROM bill_files WHERE mchid = ? AND bill_date = ? AND sha1 = ?",
            (mchid, bill_date.isoformat(), sha1),
        )
        if not rows:
            raise KeyError(f"no bill file {sha1} kept for {mchid} on {bill_date}")
        with gzip.GzipFile(fileobj=io.BytesIO(bytes(rows[0][0])), mode="rb") as unpacked:
            yield iter(io.TextIOWrapper(unpacked, encoding="utf-8-sig", newline=""))
