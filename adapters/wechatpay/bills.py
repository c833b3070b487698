"""WeChat's trade bill (交易账单), parsed streaming (docs/wechatpay-protocol.md §4.7).

Fields start with a backtick; money is yuan with two decimals and the fee
with five.  Columns are found by their header names (older files name
them differently), so a reordered or extended file still parses.  Amounts
become integer fen; the fee becomes integer "milli-fen" (1/1000 fen, the
fee's own precision), summed per day and rounded to the fen once.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from domain.money import yuan_to_fen

SUMMARY_FIRST_COLUMN = "总交易单数"


class BillFormatError(ValueError):
    """A bill that is not WeChat's trade bill format."""


class BillMismatch(BillFormatError):
    """The bill's summary disagrees with its own lines: a damaged file, not a reconciliation result."""


@dataclass(frozen=True)
class BillLine:
    trade_time: str
    mchid: str
    sub_mchid: str
    transaction_id: str
    out_trade_no: str
    trade_state: str  # SUCCESS | REFUND | …
    settled_fen: int  # 应结订单金额
    refund_id: str
    out_refund_no: str
    refund_fen: int
    refund_status: str
    fee_mfen: int  # 手续费 in 1/1000 fen (negative on refund lines)


@dataclass(frozen=True)
class BillSummary:
    lines: int
    settled_fen: int
    refunded_fen: int
    fee_mfen: int


def _clean(field: str) -> str:
    return field[1:] if field.startswith("`") else field


def fee_mfen(text: str) -> int:
    """``"0.36000"`` yuan → 36000 milli-fen; exact, no floats."""
    try:
        value = Decimal(_clean(text).strip() or "0") * 100000
    except ArithmeticError:
        raise BillFormatError(f"not a fee: {text!r}") from None
    if value != value.to_integral_value():
        raise BillFormatError(f"fee finer than 1/1000 fen: {text!r}")
    return int(value)


def fen_from_mfen(mfen: int) -> int:
    return int((Decimal(mfen) / 1000).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def _col(header: list[str], *names: str) -> int:
    for name in names:
        if name in header:
            return header.index(name)
    raise BillFormatError(f"bill has no {names[0]} column")


def parse_bill(lines: Iterable[str]) -> Iterator[BillLine | BillSummary]:
    """Yield each detail line, then the summary; memory stays flat whatever the file's size."""
    rows = csv.reader(line.rstrip("\r\n") for line in lines if line.strip())
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(rows)]
    except StopIteration:
        raise BillFormatError("empty bill") from None
    if not header or header[0] != "交易时间":
        raise BillFormatError("not a WeChat trade bill (first column is not 交易时间)")
    idx = {
        "time": _col(header, "交易时间"),
        "mchid": _col(header, "商户号"),
        "sub": _col(header, "特约商户号", "子商户号"),
        "txn": _col(header, "微信订单号"),
        "otn": _col(header, "商户订单号"),
        "state": _col(header, "交易状态"),
        "settled": _col(header, "应结订单金额", "总金额"),
        "refund_id": _col(header, "微信退款单号"),
        "orn": _col(header, "商户退款单号"),
        "refund": _col(header, "退款金额"),
        "rstatus": _col(header, "退款状态"),
        "fee": _col(header, "手续费"),
    }
    for number, row in enumerate(rows, start=2):
        if row and _clean(row[0]) == SUMMARY_FIRST_COLUMN:
            summary_header = [_clean(h) for h in row]
            values = [_clean(v) for v in next(rows, [])]
            summary = dict(zip(summary_header, values, strict=False))
            yield BillSummary(
                lines=int(Decimal(summary.get("总交易单数", "0"))),
                settled_fen=yuan_to_fen(summary.get("应结订单总金额", summary.get("总交易额", "0")), "应结订单总金额"),
                refunded_fen=yuan_to_fen(summary.get("退款总金额", summary.get("总退款金额", "0")), "退款总金额"),
                fee_mfen=fee_mfen(summary.get("手续费总金额", "0")),
            )
            return
        try:
            f = [_clean(v) for v in row]
            yield BillLine(
                trade_time=f[idx["time"]],
                mchid=f[idx["mchid"]],
                sub_mchid="" if f[idx["sub"]] == "0" else f[idx["sub"]],
                transaction_id=f[idx["txn"]],
                out_trade_no=f[idx["otn"]],
                trade_state=f[idx["state"]],
                settled_fen=yuan_to_fen(f[idx["settled"]], "应结订单金额"),
                refund_id="" if f[idx["refund_id"]] == "0" else f[idx["refund_id"]],
                out_refund_no="" if f[idx["orn"]] == "0" else f[idx["orn"]],
                refund_fen=yuan_to_fen(f[idx["refund"]], "退款金额"),
                refund_status=f[idx["rstatus"]],
                fee_mfen=fee_mfen(f[idx["fee"]]),
            )
        except (IndexError, ValueError) as exc:
            raise BillFormatError(f"bill line {number}: {exc}") from None
    raise BillFormatError("bill has no summary (总交易单数) section")


def parse_bill_bytes(content: bytes) -> Iterator[BillLine | BillSummary]:
    return parse_bill(io.StringIO(content.decode("utf-8-sig"), newline=""))
