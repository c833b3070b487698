"""Finance files a clerk accepts: XLSX with typed cells, CSV that Excel opens; written to a path.

XLSX: Chinese headers in bold, the header row frozen and filterable, column
widths set, money in 元 as numbers formatted ``#,##0.00`` beside the exact fen,
dates as real dates in Beijing time, a 合计 (totals) row.  Written row by row
(openpyxl's write-only mode), so a million-line bill's export needs no more
memory than a row.  Money never passes through a float in this code: 元 are
``Decimal(fen) / 100``, written as the exact decimal text XLSX stores.

CSV: UTF-8 with a BOM (Excel then reads the Chinese), one header row whose
cells are ``中文 (english_key)`` so a person and a program both find their
column, 元 and fen as exact text, times as ``YYYY-MM-DD HH:MM:SS`` Beijing time.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters.wechatpay.beijing import shown, wall_clock
from domain.money import fen_to_yuan, mfen_to_yuan
from domain.sheets import Column, Sheet, Workbook

FORMATS = ("csv", "xlsx")
YUAN_FORMAT = "#,##0.00"
FEE_FORMAT = "#,##0.00000"  # WeChat's bill gives fees to a thousandth of a fen
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
DATE_FORMAT = "yyyy-mm-dd"
TOTAL = "合计"


def render(book: Workbook, fmt: str) -> bytes:
    if fmt == "csv":
        return to_csv(book.sheets[book.csv_sheet])
    if fmt == "xlsx":
        return to_xlsx(book)
    raise ValueError(f"unknown format {fmt}; one of {', '.join(FORMATS)}")


def cells(column: Column) -> list[tuple[str, str]]:
    """The (key, header) pairs a column becomes: a ``fen`` column is two, 元 then 分."""
    if column.kind == "fen":
        stem = column.key.removesuffix("_fen")
        return [(f"{stem}_yuan", f"{column.header}(元)"), (column.key, f"{column.header}(分)")]
    if column.kind == "mfen":
        return [(column.key.removesuffix("_mfen") + "_yuan", f"{column.header}(元)")]
    return [(column.key, column.header)]


def _day(value: Any) -> date | None:
    if value in (None, ""):
        return None
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# -- CSV -------------------------------------------------------------------------------------


def to_csv(sheet: Sheet) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([f"{header} ({key})" for column in sheet.columns for key, header in cells(column)])
    for row in _with_totals(sheet):
        writer.writerow(_csv_values(sheet.columns, row))
    return "\ufeff".encode() + buffer.getvalue().encode("utf-8")


def _csv_values(columns: list[Column], row: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for column in columns:
        value = row.get(column.key)
        if column.kind == "fen":
            out += ["", ""] if value is None else [fen_to_yuan(int(value)), str(int(value))]
        elif column.kind == "mfen":
            out.append("" if value is None else mfen_to_yuan(int(value)))
        elif column.kind == "datetime":
            out.append(str(value) if value == TOTAL else shown(value))
        else:
            out.append("" if value is None else str(value))
    return out


def _with_totals(sheet: Sheet) -> Iterator[Mapping[str, Any]]:
    yield from sheet.rows
    if sheet.totals is not None:
        yield {sheet.columns[0].key: TOTAL} | dict(sheet.totals)


# -- XLSX ------------------------------------------------------------------------------------


def to_xlsx(book: Workbook) -> bytes:
    # Imported here for start-up time: openpyxl takes a quarter of a second to import and only exports need it.
    import openpyxl

    xlsx = openpyxl.Workbook(write_only=True)
    WriteOnlyCell, get_column_letter = openpyxl.cell.WriteOnlyCell, openpyxl.utils.get_column_letter  # noqa: N806
    bold, fill = openpyxl.styles.Font(bold=True), openpyxl.styles.PatternFill("solid", fgColor="DDEBF7")
    Alignment = openpyxl.styles.Alignment  # noqa: N806
    for sheet in book.sheets:
        ws = xlsx.create_sheet(sheet.name[:31])
        widths = [w for column in sheet.columns for w in _widths(column)]
        for index, width in enumerate(widths, start=1):
            ws.column_dimensions[get_column_letter(index)].width = width
        ws.freeze_panes = "A2"
        header = []
        for column in sheet.columns:
            for _, text in cells(column):
                cell = WriteOnlyCell(ws, value=text)
                cell.font, cell.fill = bold, fill
                cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
                header.append(cell)
        ws.append(header)
        count = 0
        for row in sheet.rows:
            ws.append(_xlsx_row(ws, sheet.columns, row, WriteOnlyCell))
            count += 1
        if sheet.totals is not None:
            totals = _xlsx_row(ws, sheet.columns, {sheet.columns[0].key: TOTAL} | dict(sheet.totals), WriteOnlyCell)
            for cell in totals:
                cell.font = bold
            ws.append(totals)
        ws.auto_filter.ref = f"A1:{get_column_letter(len(widths))}{count + 1}"
    out = io.BytesIO()
    xlsx.save(out)
    return out.getvalue()


def _widths(column: Column) -> list[int]:
    return [14, 14] if column.kind == "fen" else [14] if column.kind == "mfen" else [column.width]


def _xlsx_row(ws: Any, columns: list[Column], row: Mapping[str, Any], make: Any) -> list[Any]:
    out: list[Any] = []
    for column in columns:
        value = row.get(column.key)
        if column.kind == "fen":
            if value is None:
                out += [make(ws, value=None), make(ws, value=None)]
                continue
            money = make(ws, value=Decimal(int(value)) / 100)  # exact: 12345 → Decimal("123.45")
            money.number_format = YUAN_FORMAT
            fen = make(ws, value=int(value))
            fen.number_format = "0"
            out += [money, fen]
        elif column.kind == "mfen":
            fee = make(ws, value=None if value is None else Decimal(int(value)) / 100_000)  # exact, as the bill
            fee.number_format = FEE_FORMAT
            out.append(fee)
        elif column.kind == "datetime" and value != TOTAL:
            cell = make(ws, value=wall_clock(value))
            cell.number_format = DATETIME_FORMAT
            out.append(cell)
        elif column.kind == "date" and value != TOTAL:
            cell = make(ws, value=_day(value))
            cell.number_format = DATE_FORMAT
            out.append(cell)
        elif column.kind == "count" and value not in (None, TOTAL):
            cell = make(ws, value=int(value))
            cell.number_format = "#,##0"
            out.append(cell)
        else:
            out.append(make(ws, value=None if value is None else str(value)))
    return out


def write_export(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
