"""What the application asks of WeChat Pay, whichever API version a merchant is on.

``WechatPayClient`` (v3, JSON and RSA) and ``WechatPayV2Client`` (v2, XML and
MD5/HMAC) both answer these calls in the same types, so every use case, job
and projection is written once and a merchant's ``api`` setting picks the wire.
"""

from __future__ import annotations

from datetime import date
from typing import Protocol

from adapters.wechatpay.client import PrepayRequest, PrepayResult, RefundRequest
from adapters.wechatpay.config import Merchant
from domain.notices import RefundNotice, TransactionNotice


class Gateway(Protocol):
    def prepay(self, merchant: Merchant, request: PrepayRequest) -> PrepayResult: ...

    def transaction(self, merchant: Merchant, out_trade_no: str) -> TransactionNotice: ...

    def transaction_by_id(self, merchant: Merchant, transaction_id: str) -> TransactionNotice: ...

    def close(self, merchant: Merchant, out_trade_no: str) -> None: ...

    def request_refund(self, merchant: Merchant, request: RefundRequest) -> RefundNotice: ...

    def refund_status(self, merchant: Merchant, out_refund_no: str) -> RefundNotice: ...

    def trade_bill(self, merchant: Merchant, bill_date: date, gzip_file: bool = True) -> bytes: ...

    def fund_flow_bill(self, merchant: Merchant, bill_date: date) -> bytes: ...

    def pay_params(self, merchant: Merchant, prepay_id: str) -> dict[str, str]: ...

    def app_params(self, merchant: Merchant, prepay_id: str) -> dict[str, str]: ...
