"""What a finance export holds, before it is a file: sheets of typed columns, rows, totals.

The application fills these from the ledger (``application/finance_exports.py``);
``adapters/exports.py`` writes them as XLSX or CSV.  A column's kind decides
how a clerk sees it: ``fen`` becomes two columns, 元 with two decimals (a number
formatted ``#,##0.00``) and the exact integer fen beside it; ``mfen`` (a fee,
in thousandths of a fen, as WeChat's bill gives it) one column of 元 with five
decimals, exact; ``datetime`` a real
date-time in Beijing time; ``text`` stays text (an order number is never a number).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["text", "fen", "mfen", "count", "date", "datetime"]


@dataclass(frozen=True)
class Column:
    key: str  # the machine's name (CSV header and JSON), English snake_case
    header: str  # the clerk's name, Chinese
    kind: Kind = "text"
    width: int = 16  # characters, for the XLSX column


@dataclass
class Sheet:
    name: str  # the XLSX tab (at most 31 characters)
    columns: list[Column]
    rows: Iterable[Mapping[str, Any]]
    totals: Mapping[str, Any] | None = None  # a last row; its first column's cell says 合计


@dataclass
class Workbook:
    kind: str  # reconciliation | journal | orders: the file's name
    sheets: list[Sheet]
    csv_sheet: int = 0  # a CSV holds one sheet: this one (the lines; the summary is the XLSX's)
