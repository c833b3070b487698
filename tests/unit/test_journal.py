"""The journal's handlers as plain functions, and histories that always balance."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from domain.notices import RefundNotice, TransactionNotice
from projections.journal import Line, bill_lines, payment_lines, refund_lines

T0 = datetime(2026, 11, 22, 17, 30, tzinfo=UTC)  # 01:30 on the 23rd in Beijing


def balance(lines: list[Line]) -> int:
    return sum(line.debit_fen - line.credit_fen for line in lines)


def refunded(out_trade_no: str, out_refund_no: str, fen: int, at: datetime) -> RefundNotice:
    return RefundNotice(
        out_refund_no=out_refund_no, status="SUCCESS", out_trade_no=out_trade_no, refund_fen=fen, success_time=at
    )


def test_a_payment_is_clearing_against_sales_on_its_beijing_day() -> None:
    lines, money = payment_lines(7, "1900000001", TransactionNotice.paid("zb01", "4200", 1000, T0))
    assert [(l.account, l.debit_fen, l.credit_fen) for l in lines] == [
        ("wechat_clearing", 1000, 0),
        ("merchant_sales", 0, 1000),
    ]
    assert {l.day for l in lines} == {"2026-11-23"} and {l.event_ref for l in lines} == {7}
    assert (money.kind, money.key, money.amount_fen, money.day) == ("payment", "4200", 1000, "2026-11-23")


def test_a_refund_goes_back_through_refunds() -> None:
    lines, money = refund_lines(9, "1900000001", refunded("zb01", "R1", 300, T0))
    assert [(l.account, l.debit_fen, l.credit_fen) for l in lines] == [("refunds", 300, 0), ("wechat_clearing", 0, 300)]
    assert money.key == "R1" and lines[0].reference == "R1"


def test_a_bill_brings_the_fee_and_the_next_days_settlement() -> None:
    lines = bill_lines(11, "1900000001", date(2026, 11, 23), settled_fen=6000, refunded_fen=400, fee_fen=34)
    assert [(l.day, l.account, l.debit_fen, l.credit_fen) for l in lines] == [
        ("2026-11-23", "wechat_fees", 34, 0),
        ("2026-11-23", "wechat_clearing", 0, 34),
        ("2026-11-24", "bank", 5566, 0),
        ("2026-11-24", "wechat_clearing", 0, 5566),
    ]
    assert all(l.reference == "bill:1900000001:2026-11-23" for l in lines)
    refunds_only = bill_lines(12, "m", date(2026, 11, 23), settled_fen=0, refunded_fen=500, fee_fen=-3)
    assert balance(refunds_only) == 0 and any(l.account == "bank" and l.credit_fen == 497 for l in refunds_only)


events = st.lists(
    st.one_of(
        st.tuples(st.just("pay"), st.integers(1, 10**9), st.integers(0, 86400 * 3)),
        st.tuples(st.just("refund"), st.integers(1, 10**9), st.integers(0, 86400 * 3)),
        st.tuples(st.just("bill"), st.integers(0, 10**9), st.integers(0, 10**9), st.integers(-(10**6), 10**7)),
    ),
    max_size=60,
)


@given(events, st.integers(0, 3), st.integers(0, 3))
def test_any_history_balances_to_the_fen_for_any_period(history: list[tuple], start: int, length: int) -> None:
    lines: list[Line] = []
    for ref, item in enumerate(history, start=1):
        if item[0] == "pay":
            lines += payment_lines(
                ref, "m", TransactionNotice.paid(f"zb{ref}", f"42{ref}", item[1], T0 + timedelta(seconds=item[2]))
            )[0]
        elif item[0] == "refund":
            lines += refund_lines(ref, "m", refunded(f"zb{ref}", f"R{ref}", item[1], T0 + timedelta(seconds=item[2])))[
                0
            ]
        else:
            lines += bill_lines(ref, "m", date(2026, 11, 23), item[1], item[2], item[3])
    days = sorted({l.day for l in lines})
    period = set(days[start : start + length + 1])
    in_period = [l for l in lines if l.day in period]
    assert balance(in_period) == 0
    per_event: dict[int, int] = defaultdict(int)
    for line in lines:
        assert line.debit_fen >= 0 and line.credit_fen >= 0 and (line.debit_fen == 0 or line.credit_fen == 0)
        per_event[line.event_ref] += line.debit_fen - line.credit_fen
    assert set(per_event.values()) <= {0}
