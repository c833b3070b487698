"""The fund flow bill (资金账单) as WeChat Pay writes it: the basic account's movements, with a running balance.

https://pay.weixin.qq.com/doc/v3/merchant/4012791870 (v3 ``/v3/bill/fundflowbill``),
https://pay.weixin.qq.com/wiki/doc/api/jsapi.php?chapter=9_18 (v2 ``/pay/downloadfundflow``).

The balance starts at zero when the sandbox does, and moves as WeChat moves a
merchant's money: each payment's 应结订单金额 comes in (交易), each refund's
应结退款金额 goes out (退款), the day's fee goes out when its bill is made
(手续费), and a day's net is settled to the bank the next morning (结算).
``/sandbox/fund-flow`` adds a movement of another kind (赔付, 扣款…) so a
reconciliation has a difference to find.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from domain.money import fen_to_yuan
from sandbox.bills import BillRow, bill_rows
from sandbox.clock import BEIJING

HEADER = (
    "记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额（元）,账户结余（元）,"
    "资金变更提交申请人,备注,业务凭证号"
)
SUMMARY_HEADER = "资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额"


@dataclass(frozen=True)
class Movement:
    at: datetime
    reference: str  # 微信支付业务单号
    kind: str  # 业务类型: 交易, 退款, 手续费, 结算, or another (赔付 …)
    fen: int  # signed: + comes in, − goes out
    note: str = ""


def _fee_fen(rows: Iterable[BillRow]) -> int:
    """The day's fee in fen, rounded once from the bill's five-decimal yuan, as the ledger reads it."""
    total = sum((r.fee for r in rows), Decimal("0"))
    return int((total * 100).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def movements(
    through: date, transactions: list[dict[str, Any]], refunds: list[dict[str, Any]], extra: list[dict[str, Any]]
) -> list[Movement]:
    """Every movement of the balance up to the end of ``through`` (Beijing), oldest first."""
    days: set[date] = set()
    for t in transactions:
        if t.get("success_time"):
            days.add(datetime.fromisoformat(t["success_time"]).astimezone(BEIJING).date())
    for r in refunds:
        if r["status"] == "SUCCESS" and r.get("success_time"):
            days.add(datetime.fromisoformat(r["success_time"]).astimezone(BEIJING).date())
    moved: list[Movement] = []
    for day in sorted(d for d in days if d <= through):
        rows = bill_rows(day, transactions, refunds, "ALL")
        for row in rows:
            at = datetime.fromisoformat(row.time).astimezone(BEIJING)
            reference = row.fields[5] if row.settled_fen else row.fields[14]  # transaction_id, or refund_id
            if row.settled_fen:
                moved.append(Movement(at, reference, "交易", row.settled_fen))
            if row.refund_fen:
                moved.append(Movement(at, reference, "退款", -row.refund_fen))
        end = datetime.combine(day, datetime.max.time().replace(microsecond=0), BEIJING)
        fee = _fee_fen(rows)
        if fee:
            moved.append(Movement(end, f"FEE{day:%Y%m%d}", "手续费", -fee))
        net = sum(r.settled_fen for r in rows) - sum(r.refund_fen for r in rows) - fee
        settled_at = datetime.combine(day + timedelta(days=1), datetime.min.time(), BEIJING) + timedelta(hours=6)
        if net and settled_at.date() <= through:
            moved.append(Movement(settled_at, f"SETTLE{day:%Y%m%d}", "结算", -net, f"{day} 的交易结算到银行账户"))
    for item in extra:
        at = datetime.fromisoformat(item["at"]).astimezone(BEIJING)
        if at.date() <= through:
            moved.append(Movement(at, item["reference"], item["kind"], item["fen"], item.get("note", "")))
    moved.sort(key=lambda m: m.at)
    return moved


def render_fund_flow(bill_date: date, moved: list[Movement]) -> bytes | None:
    """The day's rows with the balance after each (the balance counts every day before it); None: no movement."""
    balance = sum(m.fen for m in moved if m.at.date() < bill_date)
    rows: list[str] = []
    income = expense = income_fen = expense_fen = 0
    for number, m in enumerate(m for m in moved if m.at.date() == bill_date):
        balance += m.fen
        if m.fen >= 0:
            income, income_fen = income + 1, income_fen + m.fen
        else:
            expense, expense_fen = expense + 1, expense_fen - m.fen
        fields = [
            m.at.strftime("%Y-%m-%d %H:%M:%S"),
            m.reference,
            f"{bill_date:%Y%m%d}{number:010d}",
            m.kind,
            m.kind,
            "收入" if m.fen >= 0 else "支出",
            fen_to_yuan(abs(m.fen)),
            fen_to_yuan(balance),
            "system",
            m.note,
            "",
        ]
        rows.append(",".join("`" + f.replace(",", "，") for f in fields))
    if not rows:
        return None
    summary = [str(len(rows)), str(income), fen_to_yuan(income_fen), str(expense), fen_to_yuan(expense_fen)]
    lines = [HEADER, *rows, SUMMARY_HEADER, ",".join("`" + f for f in summary)]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
