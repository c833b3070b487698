"""The trade bill parser on WeChat's layout (the sandbox's rendering and the spec's sample)."""

from __future__ import annotations

import io

import pytest

from adapters.wechatpay.bills import BillFormatError, BillLine, BillSummary, fee_mfen, fen_from_mfen, parse_bill

SPEC_SAMPLE = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,"
    "代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n"
    "`2024-07-09 10:06:33,`wxe1696e7c7db8e7f4,`1579507281,`0,`,`4200002360202407091150650780,`5622334254839656448,"
    "`oVgf,`JSAPI,`SUCCESS,`OTHERS,`CNY,`60.00,`0.00,`0,`0,`0.00,`0.00,`,`,`body,`attach,`0.32000,`0.54%,`60.00,`0.00,`\r\n"
    "`2024-07-09 16:47:58,`wx1,`1579507281,`0,`,`4200002166,`5617363390111199232,`oVgf,`JSAPI,`REFUND,`OTHERS,`CNY,"
    "`0.00,`0.00,`50302709992024070991956632208,`5622435300878286848,`50.00,`0.00,`ORIGINAL,`SUCCESS,`b,`a,`-0.27000,"
    "`0.54%,`0.00,`50.00,`\r\n"
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n"
    "`2,`60.00,`50.00,`0.00,`0.05000,`60.00,`50.00\r\n"
)


def test_the_spec_sample_parses_to_fen() -> None:
    items = list(parse_bill(io.StringIO(SPEC_SAMPLE, newline="")))
    success, refund, summary = items
    assert isinstance(success, BillLine) and isinstance(refund, BillLine) and isinstance(summary, BillSummary)
    assert (success.trade_state, success.settled_fen, success.fee_mfen, success.sub_mchid) == (
        "SUCCESS",
        6000,
        32000,
        "",
    )
    assert (refund.trade_state, refund.refund_fen, refund.out_refund_no, refund.fee_mfen) == (
        "REFUND",
        5000,
        "5622435300878286848",
        -27000,
    )
    assert summary == BillSummary(lines=2, settled_fen=6000, refunded_fen=5000, fee_mfen=5000)


def test_the_fee_is_exact() -> None:
    assert fee_mfen("`0.07800") == 7800 and fen_from_mfen(7800) == 8 and fen_from_mfen(33600) == 34
    with pytest.raises(BillFormatError):
        fee_mfen("0.000001")


@pytest.mark.parametrize(
    "text", ["", "hello\r\n", "交易时间,商户号\r\n`x,`y\r\n", SPEC_SAMPLE.rsplit("总交易单数", 1)[0]]
)
def test_what_is_not_a_bill_is_refused(text: str) -> None:
    with pytest.raises(BillFormatError):
        list(parse_bill(io.StringIO(text, newline="")))
