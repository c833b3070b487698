"""Native mode 1's printed products: a merchant's catalogue of fixed-price codes, kept as events.

A product's price and description are what a scan of its printed code opens
an order for (https://pay.weixin.qq.com/wiki/doc/api/native.php?chapter=6_4);
changing them is an event, so the order a scan made can always be explained.
"""

from __future__ import annotations

from application.ledger import Ledger, retry_on_conflict
from domain import ids
from domain.errors import ProductNotFound
from domain.product import Product


class Catalogue:
    """The commands and reads on products, over the ledger's store."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @retry_on_conflict
    def save_product(
        self, mchid: str, product_id: str, amount_fen: int, description: str, active: bool = True
    ) -> tuple[Product, bool]:
        """Create a product, or change its terms; the same terms again change nothing.  Says if it is new."""
        now = self.ledger.clock()
        existing: Product | None = self.ledger.find(Product.create_id(mchid, product_id))
        if existing is None:
            product = Product.new(mchid, product_id, amount_fen, description, now)
            if not active:
                product.change(amount_fen, description, False, now)
            self.ledger.save(product)
            return product, True
        if existing.change(amount_fen, description, active, now):
            self.ledger.save(existing)
        return existing, False

    def get_product(self, mchid: str, product_id: str) -> Product:
        product: Product | None = self.ledger.find(Product.create_id(mchid, product_id))
        if product is None or product.mchid != mchid:
            raise ProductNotFound(mchid, product_id)
        return product

    def products(self, mchid: str, limit: int = 10_000) -> list[Product]:
        """A merchant's catalogue, oldest first (catalogues are small: hundreds, not millions)."""
        topic = Product.Created.TOPIC
        found: list[Product] = [
            self.ledger.repository.get(ids.as_uuid(n.originator_id))
            for n in self.ledger.recorder.select_notifications(1, limit, topics=[topic])
        ]
        return [p for p in found if p.mchid == mchid]
