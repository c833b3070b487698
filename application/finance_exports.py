"""The finance exports as a clerk reads them: which sheets, which columns, what the totals and the summary say.

Rows are streamed (a day's bill may have a million lines); a sheet's totals are
summed while its rows are written, so they are ready when the writer reaches
the 合计 row.  Every sum is in integer fen.  The files are written by
``adapters/exports.py``; the CLI (``zhangben export``) and the API
(``GET /v1/finance/…?format=xlsx|csv``) give the same ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from datetime import date, timedelta
from typing import Any, Protocol

from domain.bill import DIFFERENCE_KINDS
from domain.sheets import Column, Sheet, Workbook
from domain.status import ORDER_STATUS_NAMES

RESULTS = {
    "matched": "对平",
    "matched:payment": "对平：支付",
    "matched:refund": "对平：退款",
    "missing_in_ledger": "微信有、账本无",
    "missing_in_bill": "账本有、微信无",
    "amount_mismatch": "金额不符",
    "status_mismatch": "状态不符",
}
OF = {"payment": "支付", "refund": "退款"}
ACCOUNT_NAMES = {
    "wechat_clearing": "微信支付待结算",
    "merchant_sales": "主营业务收入",
    "refunds": "销售退款",
    "merchant_discounts": "商户优惠（免充值券）",
    "wechat_fees": "微信支付手续费",
    "bank": "银行存款",
}


class Books(Protocol):
    """What the exports read (``application.finance.Finance``)."""

    def has_bill(self, mchid: str, bill_date: date) -> bool: ...

    def lines(self, mchid: str, bill_date: date) -> Iterator[dict[str, Any]]: ...

    def bill_totals(self, mchid: str, bill_date: date) -> dict[str, int]: ...

    def journal_report(self, mchid: str, day_from: date, day_to: date) -> dict[str, Any]: ...

    def fund_flow_if_imported(self, mchid: str, bill_date: date) -> dict[str, Any] | None: ...


def days(day_from: date, day_to: date) -> Iterator[date]:
    day = day_from
    while day <= day_to:
        yield day
        day += timedelta(days=1)


def _summing(rows: Iterable[Mapping[str, Any]], totals: MutableMapping[str, Any], keys: Sequence[str]) -> Iterator[Any]:
    """The rows unchanged, their ``keys`` added up into ``totals`` (fen) and counted, as they pass."""
    for key in keys:
        totals[key] = 0
    count = 0
    for row in rows:
        count += 1
        for key in keys:
            totals[key] += int(row.get(key) or 0)
        yield row
    totals["count"] = count


# -- reconciliation ---------------------------------------------------------------------------

SUMMARY_COLUMNS = [
    Column("mchid", "商户号", width=12),
    Column("date", "账单日期", "date", 12),
    Column("item", "项目", width=22),
    Column("count", "笔数", "count", 10),
    Column("bill_fen", "微信账单金额", "fen"),
    Column("ledger_fen", "账本金额", "fen"),
]
LINE_COLUMNS = [
    Column("mchid", "商户号", width=12),
    Column("date", "账单日期", "date", 12),
    Column("line_no", "账单行号", "count", 10),
    Column("trade_time", "交易时间", "datetime", 20),
    Column("result_name", "对账结果", width=16),
    Column("result", "结果代码", width=18),
    Column("of_name", "类型", width=8),
    Column("out_trade_no", "商户支付单号", width=30),
    Column("transaction_id", "微信支付订单号", width=30),
    Column("out_refund_no", "商户退款单号", width=24),
    Column("bill_fen", "微信金额（退款为负）", "fen"),
    Column("ledger_fen", "账本金额（退款为负）", "fen"),
    Column("fee_mfen", "手续费", "mfen"),
]


FUND_FLOW_COLUMNS = [
    Column("mchid", "商户号", width=12),
    Column("date", "账单日期", "date", 12),
    Column("item", "项目", width=26),
    Column("wechat_fen", "资金账单", "fen"),
    Column("journal_fen", "账本（微信支付待结算）", "fen"),
    Column("difference_fen", "差额", "fen"),
    Column("result", "结果", width=36),
]
FUND_FLOW_ITEMS = {
    "income_fen": "交易入账（应结）",
    "refunds_fen": "退款出账（应结）",
    "fees_fen": "手续费",
    "settlement_fen": "结算到银行",
    "other_fen": "其他资金变动",
    "closing_fen": "日终余额",
}


def _fund_flow_rows(books: Books, mchids: Sequence[str], day_from: date, day_to: date) -> Iterator[dict[str, Any]]:
    """资金账单: per day, each movement of the WeChat balance beside the journal's, and where the day closed."""
    for mchid in mchids:
        for day in days(day_from, day_to):
            report = books.fund_flow_if_imported(mchid, day)
            if report is None:
                continue
            titles = {d["kind"] + "_fen": d["title"] for d in report["differences"]}
            opening = next((d for d in report["differences"] if d["kind"] == "opening_balance"), None)
            for key, item in FUND_FLOW_ITEMS.items():
                wechat, journal = report["wechat"][key], report["journal"][key]
                result = titles.get(key, "一致" if wechat == journal else "")
                if key == "closing_fen" and wechat != journal:
                    result = opening["title"] if opening else "由上面各项差额引起"
                yield {
                    "mchid": mchid,
                    "date": day.isoformat(),
                    "item": item,
                    "wechat_fen": wechat,
                    "journal_fen": journal,
                    "difference_fen": wechat - journal,
                    "result": result,
                }


def reconciliation_workbook(books: Books, mchids: Sequence[str], day_from: date, day_to: date) -> Workbook:
    """汇总 (per day: matched, each kind of difference, the bill's trades, refunds, fees, net settlement),
    对账明细 (every bill line with its result, and what only the ledger has), 差异 (the differences alone) and
    资金账单 (the fund flow bill against the journal's WeChat balance)."""
    reconciled = [(m, d) for m in mchids for d in days(day_from, day_to) if books.has_bill(m, d)]
    line_totals: dict[str, Any] = {}
    difference_totals: dict[str, Any] = {}
    return Workbook(
        "reconciliation",
        [
            Sheet("汇总", SUMMARY_COLUMNS, _summary_rows(books, reconciled)),
            Sheet(
                "对账明细",
                LINE_COLUMNS,
                _summing(_line_rows(books, reconciled), line_totals, ("bill_fen", "ledger_fen", "fee_mfen")),
                line_totals,
            ),
            Sheet(
                "差异",
                LINE_COLUMNS,
                _summing(
                    (r for r in _line_rows(books, reconciled) if r["result"] != "matched"),
                    difference_totals,
                    ("bill_fen", "ledger_fen"),
                ),
                difference_totals,
            ),
            Sheet("资金账单", FUND_FLOW_COLUMNS, _fund_flow_rows(books, mchids, day_from, day_to)),
        ],
        csv_sheet=1,
    )


def _line_rows(books: Books, reconciled: Sequence[tuple[str, date]]) -> Iterator[dict[str, Any]]:
    """Each line, money signed as it moves the balance: a refund is negative, so a column's 合计 is the net."""
    for mchid, day in reconciled:
        for line in books.lines(mchid, day):
            sign = -1 if line["of"] == "refund" else 1
            yield line | {
                "mchid": mchid,
                "date": day.isoformat(),
                "result_name": RESULTS[line["result"]],
                "of_name": OF.get(line["of"], line["of"]),
                "bill_fen": None if line["bill_fen"] is None else sign * line["bill_fen"],
                "ledger_fen": None if line["ledger_fen"] is None else sign * line["ledger_fen"],
            }


def _summary_rows(books: Books, reconciled: Sequence[tuple[str, date]]) -> Iterator[dict[str, Any]]:
    for mchid, day in reconciled:
        # count, bill fen, ledger fen: matched payments and refunds apart, each kind of difference
        found = {kind: [0, 0, 0] for kind in ("matched:payment", "matched:refund", *DIFFERENCE_KINDS)}
        for line in books.lines(mchid, day):
            sums = found["matched:" + line["of"] if line["result"] == "matched" else line["result"]]
            sums[0] += 1
            sums[1] += line["bill_fen"] or 0
            sums[2] += line["ledger_fen"] or 0
        bill = books.bill_totals(mchid, day)
        net = bill["settled_fen"] - bill["refunded_fen"] - bill["fee_fen"]
        base = {"mchid": mchid, "date": day.isoformat()}
        for kind, (count, bill_fen, ledger_fen) in found.items():
            yield base | {"item": RESULTS[kind], "count": count, "bill_fen": bill_fen, "ledger_fen": ledger_fen}
        yield base | {"item": "微信账单：交易", "count": bill["trades"], "bill_fen": bill["settled_fen"]}
        yield base | {"item": "微信账单：退款", "count": bill["refunds"], "bill_fen": bill["refunded_fen"]}
        yield base | {"item": "微信账单：手续费", "bill_fen": bill["fee_fen"]}
        yield base | {"item": "净结算（交易−退款−手续费）", "bill_fen": net}


# -- journal ---------------------------------------------------------------------------------

JOURNAL_COLUMNS = [
    Column("mchid", "商户号", width=12),
    Column("date", "记账日期", "date", 12),
    Column("account", "科目代码", width=16),
    Column("account_name", "科目", width=16),
    Column("debit_fen", "借方", "fen"),
    Column("credit_fen", "贷方", "fen"),
    Column("reference", "业务单号", width=30),
    Column("event", "事件序号", "count", 10),
    Column("note", "摘要", width=30),
]
BALANCE_COLUMNS = [
    Column("mchid", "商户号", width=12),
    Column("account", "科目代码", width=16),
    Column("account_name", "科目", width=16),
    Column("debit_fen", "借方合计", "fen"),
    Column("credit_fen", "贷方合计", "fen"),
    Column("balance_fen", "借贷差额", "fen"),  # debit − credit
]


def journal_workbook(books: Books, mchids: Sequence[str], day_from: date, day_to: date) -> Workbook:
    """日记账 (every line, 借 = 贷 in the 合计 row) and 试算平衡 (each account's sums and balance)."""
    reports = {mchid: books.journal_report(mchid, day_from, day_to) for mchid in mchids}
    lines = [
        line | {"mchid": mchid, "account_name": ACCOUNT_NAMES.get(line["account"], line["account"])}
        for mchid, report in reports.items()
        for line in report["lines"]
    ]
    balances = [
        {
            "mchid": mchid,
            "account": account,
            "account_name": ACCOUNT_NAMES.get(account, account),
            "debit_fen": sums["debit_fen"],
            "credit_fen": sums["credit_fen"],
            "balance_fen": sums["debit_fen"] - sums["credit_fen"],
        }
        for mchid, report in reports.items()
        for account, sums in report["trial_balance"]["accounts"].items()
    ]
    line_totals: dict[str, Any] = {}
    balance_totals: dict[str, Any] = {}
    return Workbook(
        "journal",
        [
            Sheet("日记账", JOURNAL_COLUMNS, _summing(lines, line_totals, ("debit_fen", "credit_fen")), line_totals),
            Sheet(
                "试算平衡",
                BALANCE_COLUMNS,
                _summing(balances, balance_totals, ("debit_fen", "credit_fen", "balance_fen")),
                balance_totals,
            ),
        ],
    )


# -- orders ----------------------------------------------------------------------------------

ORDER_COLUMNS = [
    Column("mchid", "商户号", width=12),
    Column("merchant_order_no", "商户订单号", width=24),
    Column("description", "商品描述", width=24),
    Column("status_name", "状态", width=12),
    Column("status", "状态代码", width=18),
    Column("transaction_id", "微信支付订单号", width=30),
    Column("out_trade_no", "商户支付单号", width=30),
    Column("amount_fen", "订单金额", "fen"),
    Column("paid_fen", "实收金额", "fen"),
    Column("settlement_fen", "应结金额", "fen"),
    Column("payer_total_fen", "用户实付", "fen"),
    Column("coupon_fen", "券", "fen"),
    Column("refunded_fen", "已退款", "fen"),
    Column("created_at", "下单时间", "datetime", 20),
    Column("paid_at", "支付时间", "datetime", 20),
    Column("currency", "币种", width=6),
    Column("user_id", "买家", width=16),
    Column("items", "商品明细", width=40),
    Column("meta", "meta", width=30),
]


EXPORTS = ("reconciliation", "journal", "orders")
OrdersOn = Callable[[str, date, date], Iterable[Mapping[str, Any]]]  # a merchant's orders created on these days


def export_workbook(
    what: str, books: Books, orders_on: OrdersOn, mchids: Sequence[str], day_from: date, day_to: date
) -> Workbook:
    """One of ``EXPORTS`` for these merchants and days: what ``zhangben export`` and the console both write."""
    if what == "reconciliation":
        return reconciliation_workbook(books, mchids, day_from, day_to)
    if what == "journal":
        return journal_workbook(books, mchids, day_from, day_to)
    return orders_workbook(view for mchid in mchids for view in orders_on(mchid, day_from, day_to))


def orders_workbook(orders: Iterable[Mapping[str, Any]]) -> Workbook:
    """订单: one row per order view, with its description and the 微信支付订单号 of the attempt that was paid."""
    totals: dict[str, Any] = {}
    rows = (_order_row(view) for view in orders)
    money = ("amount_fen", "paid_fen", "settlement_fen", "payer_total_fen", "coupon_fen", "refunded_fen")
    return Workbook("orders", [Sheet("订单", ORDER_COLUMNS, _summing(rows, totals, money), totals)])


def _order_row(view: Mapping[str, Any]) -> dict[str, Any]:
    paid = next((p for p in view.get("payments", []) if p.get("transaction_id")), None)
    return {
        "mchid": view["mchid"],
        "merchant_order_no": view["merchant_order_no"],
        "description": view.get("description", ""),
        "status": view["status"],
        "status_name": ORDER_STATUS_NAMES.get(view["status"], view["status"]),
        "transaction_id": paid["transaction_id"] if paid else None,
        "out_trade_no": paid["out_trade_no"] if paid else None,
        "amount_fen": view["amount_fen"],
        "paid_fen": view["paid_fen"],
        "settlement_fen": view.get("settlement_fen", view["paid_fen"]),  # views before coupons were split: all
        "payer_total_fen": view.get("payer_total_fen", view["paid_fen"]),
        "coupon_fen": view.get("coupon_fen", view["paid_fen"] - view.get("payer_total_fen", view["paid_fen"])),
        "refunded_fen": view["refunded_fen"],
        "created_at": view.get("created_at"),
        "paid_at": view.get("paid_at"),
        "currency": view.get("currency", "CNY"),
        "user_id": view.get("user_id"),
        # 珍珠奶茶×2@1800; 芝士蛋糕×1@990 — each line's quantity and unit price in fen, as the order keeps them
        "items": "; ".join(f"{i['name']}×{i['quantity']}@{i['unit_price_fen']}" for i in view.get("items") or []),
        "meta": json.dumps(view["meta"], ensure_ascii=False, sort_keys=True) if view.get("meta") else None,
    }
