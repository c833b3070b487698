"""An in-memory WeChat Pay behind the real ``Gateway`` protocol, for in-process tests of the use cases.

It keeps what WeChat keeps (transactions by out_trade_no, refunds by out_refund_no) and answers the way the
real clients do — the same notices, the same errors — without HTTP, signatures or a sandbox process.  A test
pays (``pay``), settles refunds (``settle``) and sets faults (``refuse_refunds``) by hand.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from adapters.wechatpay.client import PrepayRequest, PrepayResult, RefundRequest
from adapters.wechatpay.config import Merchant
from adapters.wechatpay.errors import WechatPayBusinessError, WechatPayNotFound
from adapters.wechatpay.merchant_book import MerchantBook
from domain.notices import RefundNotice, TransactionNotice

_ids = itertools.count(1)


@dataclass
class FakeWechat:
    merchants: dict[str, Merchant]
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    refuse_refunds: str = ""  # a WeChat code every new refund is refused with (NOT_ENOUGH …), or ""
    calls: list[str] = field(default_factory=list)

    @property
    def book(self) -> MerchantBook:
        """The merchants as the real clients hold them (``PaymentService`` reads this one)."""
        return MerchantBook(self.merchants)

    # -- what the ledger asks (the Gateway protocol) ------------------------------------------

    def prepay(self, merchant: Merchant, request: PrepayRequest) -> PrepayResult:
        out_trade_no = request.out_trade_no
        self.calls.append(f"prepay {out_trade_no}")
        self.transactions.setdefault(out_trade_no, {"state": "NOTPAY", "total": request.total_fen})
        return PrepayResult(code_url=f"weixin://wxpay/bizpayurl?pr={out_trade_no[-8:]}")

    def transaction(self, merchant: Merchant, out_trade_no: str) -> TransactionNotice:
        self.calls.append(f"query {out_trade_no}")
        txn = self.transactions.get(out_trade_no)
        if txn is None:
            raise WechatPayNotFound("ORDER_NOT_EXIST", code="ORDER_NOT_EXIST", status=404)
        return _notice(out_trade_no, txn)

    def close(self, merchant: Merchant, out_trade_no: str) -> None:
        self.calls.append(f"close {out_trade_no}")
        txn = self.transactions.get(out_trade_no)
        if txn is None:
            raise WechatPayNotFound("ORDER_NOT_EXIST", code="ORDER_NOT_EXIST", status=404)
        if txn["state"] == "SUCCESS":
            raise WechatPayBusinessError("ORDERPAID", code="ORDERPAID", status=400)
        txn["state"] = "CLOSED"

    def request_refund(self, merchant: Merchant, request: RefundRequest) -> RefundNotice:
        out_trade_no, out_refund_no, refund_fen = request.out_trade_no, request.out_refund_no, request.refund_fen
        total_fen = request.total_fen
        self.calls.append(f"refund {out_refund_no}")
        if out_refund_no not in self.refunds:
            if self.refuse_refunds:
                raise WechatPayBusinessError(self.refuse_refunds, code=self.refuse_refunds, status=403)
            txn = self.transactions[out_trade_no]
            if total_fen != txn["total"]:
                raise WechatPayBusinessError("订单金额与原订单金额不一致", code="INVALID_REQUEST", status=400)
            self.refunds[out_refund_no] = {"out_trade_no": out_trade_no, "refund": refund_fen, "status": "PROCESSING"}
        return self._refund_notice(out_refund_no)

    def refund_status(self, merchant: Merchant, out_refund_no: str) -> RefundNotice:
        if out_refund_no not in self.refunds:
            raise WechatPayNotFound("RESOURCE_NOT_EXISTS", code="RESOURCE_NOT_EXISTS", status=404)
        return self._refund_notice(out_refund_no)

    def trade_bill(self, merchant: Merchant, bill_date: date, gzip_file: bool = True) -> bytes:
        raise WechatPayBusinessError("no bill here", code="NO_STATEMENT_EXIST", status=400)

    def fund_flow_bill(self, merchant: Merchant, bill_date: date) -> bytes:
        raise WechatPayBusinessError("no bill here", code="NO_STATEMENT_EXIST", status=400)

    def pay_params(self, merchant: Merchant, prepay_id: str) -> dict[str, str]:
        return {"package": f"prepay_id={prepay_id}"}

    def app_params(self, merchant: Merchant, prepay_id: str) -> dict[str, str]:
        return {"prepayid": prepay_id}

    # -- what a payer and WeChat do ------------------------------------------------------------

    def pay(self, out_trade_no: str, total_fen: int | None = None) -> TransactionNotice:
        """The payer pays (``total_fen``: another total than the prepay's); the notice WeChat would send."""
        txn = self.transactions[out_trade_no]
        txn |= {
            "state": "SUCCESS",
            "transaction_id": f"42{next(_ids):026d}",
            "paid": total_fen if total_fen is not None else txn["total"],
            "success_time": datetime.now(UTC),
        }
        txn["total"] = txn["paid"]
        return _notice(out_trade_no, txn)

    def settle(self, out_refund_no: str, status: str = "SUCCESS") -> RefundNotice:
        self.refunds[out_refund_no]["status"] = status
        return self._refund_notice(out_refund_no)

    def _refund_notice(self, out_refund_no: str) -> RefundNotice:
        refund = self.refunds[out_refund_no]
        return RefundNotice(
            out_refund_no=out_refund_no,
            out_trade_no=refund["out_trade_no"],
            refund_id=f"50{abs(hash(out_refund_no)) % 10**20:020d}",
            status=refund["status"],
            refund_fen=refund["refund"],
            success_time=datetime.now(UTC) if refund["status"] == "SUCCESS" else None,
            user_received_account="支付用户零钱",
        )


def _notice(out_trade_no: str, txn: dict[str, Any]) -> TransactionNotice:
    paid = txn["state"] == "SUCCESS"
    return TransactionNotice(
        out_trade_no=out_trade_no,
        trade_state=txn["state"],
        transaction_id=txn.get("transaction_id"),
        total_fen=txn["total"] if paid else None,
        payer_total_fen=txn["total"] if paid else None,
        success_time=txn.get("success_time"),
        trade_state_desc="",
    )
