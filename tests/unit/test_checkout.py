"""The checkout's rules (domain/checkout.py): items add up to the fen, CNY only, small meta, allowed return hosts;
an order keeps them, and an order made before they existed reads as it did."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from application.finance_exports import _order_row
from application.orders import attempt_expiry
from domain.checkout import LineItem, meta_text, require_items, require_return_url
from domain.errors import InvalidInput
from domain.order import Order
from domain.requests import OrderTerms

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 10_000)), min_size=1, max_size=10), st.integers(-3, 3))
def test_items_must_add_up_to_the_amount_to_the_fen(lines: list[tuple[int, int]], off: int) -> None:
    items = [LineItem(f"item {n}", q, p) for n, (q, p) in enumerate(lines)]
    total = sum(q * p for q, p in lines)
    if off == 0:
        assert require_items(items, total) == tuple(items)
    else:
        with pytest.raises(InvalidInput, match="add up"):
            require_items(items, total + off)


def test_terms_refuse_another_currency_and_large_meta() -> None:
    with pytest.raises(InvalidInput, match="CNY"):
        OrderTerms(100, "茶", "native", currency="USD").checked()
    with pytest.raises(InvalidInput, match="2048"):
        meta_text({"x": "y" * 2100})
    assert meta_text({"b": 1, "a": [1, "二"]}) == '{"a":[1,"二"],"b":1}'  # one text per object: idempotent


@pytest.mark.parametrize(
    "url", ["http://shop.example.com/", "https://evil.example.net/", "https://user:pw@shop.example.com/", "nope"]
)
def test_a_return_url_is_https_on_an_allowed_host(url: str) -> None:
    with pytest.raises(InvalidInput):
        require_return_url(url, ["shop.example.com"])
    assert require_return_url("https://SHOP.example.com/a?b=1", ["shop.example.com"])


def test_an_order_keeps_its_checkout_and_an_old_one_reads_as_before() -> None:
    terms = OrderTerms(
        4590, "奶茶", "native", user_id="u-1", items=(LineItem("奶茶", 1, 4590),), meta='{"k":1}'
    ).checked()
    order = Order(mchid="1", merchant_order_no="A", created_at=NOW, **terms.as_dict())
    assert order.terms == terms and order.items == (LineItem("奶茶", 1, 4590),)
    state: dict[str, object] = {}
    Order.Created.upcast_v1_v2(state)  # a Created stored before the checkout fields
    assert state == {"user_id": None, "items": [], "return_url": None, "currency": "CNY", "meta": None}
    row = _order_row(
        {
            "mchid": "1",
            "merchant_order_no": "A",
            "status": "PAID",
            "amount_fen": 4590,
            "paid_fen": 4590,
            "refunded_fen": 0,
            "items": [{"name": "奶茶", "quantity": 1, "unit_price_fen": 4590}],
            "meta": {"k": 1},
        }
    )
    assert row["items"] == "奶茶×1@4590" and row["meta"] == '{"k": 1}' and row["currency"] == "CNY"


def test_each_qr_lives_within_the_orders_deadline() -> None:
    order = Order(
        mchid="1",
        merchant_order_no="A",
        created_at=NOW,
        **OrderTerms(100, "茶", "native", expire_seconds=600).as_dict(),
    )
    assert attempt_expiry(order, NOW, None) == NOW + timedelta(minutes=10)  # one QR for the order's life
    assert attempt_expiry(order, NOW, 120) == NOW + timedelta(minutes=2)
    assert attempt_expiry(order, NOW + timedelta(minutes=9), 120) == NOW + timedelta(minutes=10)  # the deadline
    late = NOW + timedelta(minutes=9, seconds=30)  # closer than a minute: a lifetime of its own
    assert attempt_expiry(order, late, 120) == late + timedelta(minutes=2)
