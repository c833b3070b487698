"""Native mode 1: printed product codes, and the scan that turns one into an order.

A printed code (``weixin://wxpay/bizpayurl?…&product_id=…&sign=…``) is
signed once with the merchant's v2 key and stays on the shelf.  Each scan
makes WeChat call the ledger's ``/wechatpay/v2/native-callback`` with the
``product_id`` and the payer's ``openid``; the ledger opens a new order at
the product's price (a new ``merchant_order_no`` per scan), prepays it with
``unifiedorder`` (``trade_type=NATIVE``, the same ``product_id``) and answers
the signed ``prepay_id`` (https://pay.weixin.qq.com/wiki/doc/api/native.php?chapter=6_4).
The pay result then arrives as for any v2 order.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

from adapters.wechatpay.beijing import beijing_iso
from adapters.wechatpay.config import Merchant
from adapters.wechatpay.errors import SignatureError, WechatPayError
from adapters.wechatpay.v2_callbacks import ProductScan, product_scan_answer, read_product_scan
from adapters.wechatpay.v2_signing import bizpayurl, new_nonce
from application.callbacks import Callbacks
from application.catalogue import Catalogue
from application.payments import PaymentService
from domain.audit import Arrival
from domain.errors import Conflict, LedgerError, ProductNotFound
from domain.product import Product
from domain.requests import NewOrder, OrderTerms

log = logging.getLogger("zhangben.products")


def product_view(product: Product) -> dict[str, object]:
    return {
        "product_id": product.product_id,
        "amount_fen": product.amount_fen,
        "description": product.description,
        "active": product.active,
        "created_at": beijing_iso(product.created_at),
        "updated_at": beijing_iso(product.updated_at),
    }


class Products:
    def __init__(self, catalogue: Catalogue, payments: PaymentService, callbacks: Callbacks) -> None:
        self.catalogue = catalogue
        self.payments = payments
        self.callbacks = callbacks
        # the Products of a merchant's partition: a scan names its merchant once read (one partition: this one)
        self.route: Callable[[str], Products] = lambda merchant: self

    def save(
        self, mchid: str, product_id: str, amount_fen: int, description: str, active: bool = True
    ) -> tuple[Product, bool]:
        self._v2_merchant(mchid)
        return self.catalogue.save_product(mchid, product_id, amount_fen, description, active)

    def get(self, mchid: str, product_id: str) -> Product:
        return self.catalogue.get_product(mchid, product_id)

    def list(self, mchid: str) -> list[Product]:
        return self.catalogue.products(mchid)

    def code_url(self, mchid: str, product_id: str) -> str:
        """The signed ``bizpayurl`` to print; it names the product only, so a price change needs no reprint."""
        merchant = self._v2_merchant(mchid)
        self.catalogue.get_product(mchid, product_id)
        return bizpayurl(
            merchant.appid,
            merchant.account_mchid,
            product_id,
            merchant.v2_key,
            str(int(time.time())),
            new_nonce(),
            merchant.sub_mchid if merchant.is_partner else "",
        )

    def _v2_merchant(self, mchid: str) -> Merchant:
        merchant = self.payments.merchant(mchid)
        if not merchant.is_v2:
            raise Conflict(
                f"merchant {mchid} is on API v3: printed product codes (Native mode 1) are an API v2 feature"
            )
        return merchant

    def scan(self, arrival: Arrival) -> bytes:
        """WeChat's scan callback → a new order, prepaid → the signed answer (or a signed FAIL)."""
        try:
            scan = read_product_scan(arrival.body, self.payments.merchants)
        except (SignatureError, WechatPayError) as exc:
            self.callbacks.refused(arrival, str(exc))
            raise
        return self.route(scan.merchant.mchid)._answer(scan)

    def _answer(self, scan: ProductScan) -> bytes:
        merchant = scan.merchant
        try:
            product = self.catalogue.get_product(merchant.mchid, scan.product_id)
        except ProductNotFound:
            return product_scan_answer(merchant, None, "商品不存在")
        if not product.active:
            return product_scan_answer(merchant, None, "商品已下架")
        merchant_order_no = f"{product.product_id}-{secrets.token_hex(6)}"
        try:
            terms = OrderTerms(
                product.amount_fen,
                product.description,
                "native",
                scan.openid,
                attach=f"product_id={product.product_id}",
            )
            answer = self.payments.create_order(
                NewOrder(merchant.mchid, merchant_order_no, terms, product_id=product.product_id)
            )
        except (LedgerError, WechatPayError) as exc:
            log.warning("product %s: scan not answered with a prepay: %s", product.product_id, exc)
            return product_scan_answer(merchant, None, "下单失败，请重新扫码")
        prepay = answer.checkout.prepay
        return product_scan_answer(merchant, prepay.prepay_id if prepay else None)
