"""The trade bill (交易账单) as WeChat Pay writes it (docs/wechatpay-protocol.md §4.7).

Backtick before every field, money in yuan with two decimals, fees with
five, ``\\r\\n`` line ends, a summary after the detail rows.  The fee is the
rate times the amount, exactly: at 0.60 % a fen amount gives a fee with at
most five decimals in yuan, so no rounding happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from domain.money import fen_to_yuan
from sandbox.clock import BEIJING
from sandbox.refunds import shares_of
from sandbox.transactions import coupon_fen, paid_total, settlement_total

FEE_RATE = Decimal("0.006")
FEE_RATE_TEXT = "0.60%"
HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
    "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)
SUMMARY_HEADER = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"


def fee_yuan(fen: int) -> Decimal:
    return (Decimal(fen) * FEE_RATE / 100).quantize(Decimal("0.00001"))


def _day(rfc3339: str | None) -> date | None:
    return datetime.fromisoformat(rfc3339).astimezone(BEIJING).date() if rfc3339 else None


def _stamp(rfc3339: str) -> str:
    return datetime.fromisoformat(rfc3339).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def _line(fields: list[str]) -> str:
    return ",".join("`" + f.replace(",", "，") for f in fields)


@dataclass(frozen=True)
class BillRow:
    time: str
    fields: list[str]
    settled_fen: int  # 应结订单金额 (payments) …
    refund_fen: int  # … 退款金额, which is the 应结退款金额 (refunds)
    fee: Decimal
    total_fen: int = 0  # 订单金额
    applied_refund_fen: int = 0  # 申请退款金额
    cash_coupon_refund_fen: int = 0  # 充值券退款金额


def bill_rows(
    bill_date: date, transactions: list[dict[str, Any]], refunds: list[dict[str, Any]], bill_type: str
) -> list[BillRow]:
    """Each line of the day, in time order.

    A payment's 应结订单金额 is its total less the 免充值券 (what WeChat settles), 代金券金额 every coupon, 订单金额
    the total; a refund's 退款金额 is what WeChat takes back (less the 免充值券 share), 充值券退款金额 the 充值券's
    share and 申请退款金额 the refund asked for.  The fee is on what is settled.
    https://pay.weixin.qq.com/doc/v3/merchant/4012791869
    """
    rows = []
    by_key = {t["key"]: t for t in transactions}
    if bill_type in ("ALL", "SUCCESS"):
        for t in transactions:
            if t.get("success_time") and _day(t["success_time"]) == bill_date:
                total, settled = paid_total(t), settlement_total(t)
                fee = fee_yuan(settled)
                rows.append(
                    BillRow(
                        t["success_time"],
                        [
                            _stamp(t["success_time"]),
                            t["appid"],
                            t["mchid"],
                            t["sub_mchid"] or "0",
                            "",
                            t["transaction_id"],
                            t["out_trade_no"],
                            t["openid"],
                            t["trade_type"],
                            "SUCCESS",
                            "OTHERS",
                            "CNY",
                            fen_to_yuan(settled),
                            fen_to_yuan(coupon_fen(t)),
                            "0",
                            "0",
                            "0.00",
                            "0.00",
                            "",
                            "",
                            t["description"],
                            t["attach"],
                            f"{fee:.5f}",
                            FEE_RATE_TEXT,
                            fen_to_yuan(total),
                            "0.00",
                            "",
                        ],
                        settled,
                        0,
                        fee,
                        total_fen=total,
                    )
                )
    if bill_type in ("ALL", "REFUND"):
        for r in refunds:
            if r["status"] == "SUCCESS" and _day(r["success_time"]) == bill_date:
                t = by_key[r["txn_key"]]
                shares = shares_of(r)
                fee = -fee_yuan(shares["settlement_refund"])
                rows.append(
                    BillRow(
                        r["success_time"],
                        [
                            _stamp(r["success_time"]),
                            t["appid"],
                            t["mchid"],
                            t["sub_mchid"] or "0",
                            "",
                            t["transaction_id"],
                            t["out_trade_no"],
                            t["openid"],
                            t["trade_type"],
                            "REFUND",
                            "OTHERS",
                            "CNY",
                            "0.00",
                            "0.00",
                            r["refund_id"],
                            r["out_refund_no"],
                            fen_to_yuan(shares["settlement_refund"]),
                            fen_to_yuan(shares["cash_coupon_refund"]),
                            "ORIGINAL",
                            "SUCCESS",
                            t["description"],
                            t["attach"],
                            f"{fee:.5f}",
                            FEE_RATE_TEXT,
                            "0.00",
                            fen_to_yuan(r["refund"]),
                            "",
                        ],
                        0,
                        shares["settlement_refund"],
                        fee,
                        applied_refund_fen=r["refund"],
                        cash_coupon_refund_fen=shares["cash_coupon_refund"],
                    )
                )
    rows.sort(key=lambda row: row.time)
    return rows


def render_bill(rows: list[BillRow]) -> bytes:
    fees = sum((r.fee for r in rows), Decimal("0"))
    lines = [
        HEADER,
        *(_line(r.fields) for r in rows),
        SUMMARY_HEADER,
        _line(
            [
                str(len(rows)),
                fen_to_yuan(sum(r.settled_fen for r in rows)),
                fen_to_yuan(sum(r.refund_fen for r in rows)),
                fen_to_yuan(sum(r.cash_coupon_refund_fen for r in rows)),
                f"{fees:.5f}",
                fen_to_yuan(sum(r.total_fen for r in rows)),
                fen_to_yuan(sum(r.applied_refund_fen for r in rows)),
            ]
        ),
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
