"""File writers for finance: CSV that Excel opens, XLSX, written to a path."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FORMATS = ("csv", "xlsx")


def to_csv(columns: list[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    """UTF-8 with a BOM, so Excel opens the Chinese text."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return "\ufeff".encode() + buffer.getvalue().encode("utf-8")


def to_xlsx(sheet: str, columns: list[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    # Imported here for start-up time: openpyxl takes a quarter of a second to import and only exports need it.
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    ws = book.create_sheet(sheet)
    ws.append(columns)
    for row in rows:
        ws.append([row.get(c) for c in columns])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def export(kind: str, fmt: str, columns: list[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    if fmt == "csv":
        return to_csv(columns, rows)
    if fmt == "xlsx":
        return to_xlsx(kind, columns, rows)
    raise ValueError(f"unknown format {fmt}; one of {', '.join(FORMATS)}")


def write_export(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
