"""WeChat's fund flow bill (资金账单): every movement of the merchant's WeChat Pay balance on one day.

v3 ``GET /v3/bill/fundflowbill`` (https://pay.weixin.qq.com/doc/v3/merchant/4012791870), v2
``/pay/downloadfundflow`` over mutual TLS (https://pay.weixin.qq.com/wiki/doc/api/jsapi.php?chapter=9_18).
The layout is the trade bill's: backticked fields, yuan with two decimals, a summary after the detail rows::

    记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额（元）,账户结余（元）,资金变更提交申请人,备注,业务凭证号
    资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额

Each movement is summed into what the ledger's journal can be compared with: sales in (交易), refunds out
(退款), fees (手续费), settlement to the bank (结算 / 提现), and anything else; the day's closing balance is
the last row's 账户结余.  Amounts are integer fen; a file whose summary disagrees with its rows is damaged.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field

from adapters.wechatpay.bills import BillFormatError, BillMismatch, _clean
from domain.errors import InvalidAmount
from domain.money import yuan_to_fen

SUMMARY_FIRST_COLUMN = "资金流水总笔数"
# 业务类型 → the category the journal knows it as
CATEGORIES = {
    "交易": "income",
    "退款": "refunds",
    "手续费": "fees",
    "扣除交易手续费": "fees",
    "结算": "settlement",
    "提现": "settlement",
}


@dataclass
class FundFlowDay:
    """A day of the balance's movements, summed: ``income`` and ``other`` signed (收入 +, 支出 −), ``refunds``,
    ``fees`` and ``settlement`` as amounts taken out."""

    lines: int = 0
    income_fen: int = 0
    refunds_fen: int = 0
    fees_fen: int = 0
    settlement_fen: int = 0
    other_fen: int = 0
    closing_fen: int | None = None
    other_items: list[str] = field(default_factory=list)  # 业务类型 of the movements in ``other``

    def totals(self) -> dict[str, int]:
        return {
            "income_fen": self.income_fen,
            "refunds_fen": self.refunds_fen,
            "fees_fen": self.fees_fen,
            "settlement_fen": self.settlement_fen,
            "other_fen": self.other_fen,
        }


def _col(header: list[str], name: str) -> int:
    for i, column in enumerate(header):
        if column.replace("(", "（").replace(")", "）") == name:
            return i
    raise BillFormatError(f"the fund flow bill has no column {name!r}")


def parse_fund_flow(lines: Iterable[str]) -> FundFlowDay:
    """Sum a day's fund flow bill; ``BillFormatError`` if it is not one, ``BillMismatch`` if it is damaged."""
    rows = csv.reader(line.rstrip("\r\n") for line in lines if line.strip())
    header = [h.strip().lstrip("\ufeff") for h in next(rows, [])]
    if not header or header[0] != "记账时间":
        raise BillFormatError("not a WeChat fund flow bill (the first column is not 记账时间)")
    kind, direction = _col(header, "业务类型"), _col(header, "收支类型")
    amount, balance = _col(header, "收支金额（元）"), _col(header, "账户结余（元）")
    day = FundFlowDay()
    income_count = expense_count = 0
    income_total = expense_total = 0
    for raw in rows:
        fields = [_clean(f) for f in raw]
        if fields and fields[0] == SUMMARY_FIRST_COLUMN:
            summary = [_clean(f) for f in next(rows, [])]
            if len(summary) < 5:
                raise BillFormatError("the fund flow bill's summary is cut short")
            try:
                stated = (int(summary[0]), int(summary[1]), yuan_to_fen(summary[2]), int(summary[3]))
                stated_expense = yuan_to_fen(summary[4])
            except (ValueError, InvalidAmount):
                raise BillFormatError("the fund flow bill's summary is not numbers") from None
            found = (day.lines, income_count, income_total, expense_count)
            if stated != found or stated_expense != expense_total:
                raise BillMismatch(f"the fund flow bill's summary does not add up to its {day.lines} rows")
            return day
        try:
            fen = yuan_to_fen(fields[amount])
            closing = yuan_to_fen(fields[balance])
        except (IndexError, InvalidAmount):
            raise BillFormatError(f"fund flow row {day.lines + 1} has no amount or balance") from None
        incoming = fields[direction] == "收入"
        day.lines += 1
        if incoming:
            income_count, income_total = income_count + 1, income_total + fen
        else:
            expense_count, expense_total = expense_count + 1, expense_total + fen
        category = CATEGORIES.get(fields[kind], "other")
        if category == "income":
            day.income_fen += fen if incoming else -fen
        elif category == "other":
            day.other_fen += fen if incoming else -fen
            day.other_items.append(fields[kind])
        else:  # money out (a refund or fee given back comes in: it lessens what went out)
            taken = -fen if incoming else fen
            if category == "refunds":
                day.refunds_fen += taken
            elif category == "fees":
                day.fees_fen += taken
            else:
                day.settlement_fen += taken
        day.closing_fen = closing
    raise BillFormatError("the fund flow bill has no summary (资金流水总笔数): it is cut short")


def parse_fund_flow_bytes(content: bytes) -> FundFlowDay:
    return parse_fund_flow(io.StringIO(content.decode("utf-8-sig"), newline=""))
