"""The use cases in process, against an in-memory WeChat (``FakeWechat``) and an in-memory event store.

What the deployment tests check through processes and HTTP, checked here in milliseconds: the rules a person
or WeChat can break — a review refund WeChat refuses or closes later, a payment short or over, a close that
finds the attempt paid — with the real ``PaymentService``, ``Callbacks``-free (``apply_*`` is what a
notification and a query both go through).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.wechatpay.config import load_merchants
from adapters.wechatpay.errors import WechatPayBusinessError
from application.payments import PaymentService
from application.refunding import RefundService
from application.refunds import Refunds
from application.reviews import Reviews
from application.rooms import Rooms
from bootstrap.ledger import open_ledger
from bootstrap.settings import load_settings
from domain.errors import Conflict, InvalidTransition
from domain.order import REVIEW_REFUND_FAILED, Order, paid_announcements
from domain.requests import NewOrder, OrderTerms
from sandbox.keyset import DIRECT, init_keyset
from tests.application.fake_wechat import FakeWechat

MCHID = DIRECT.mchid


@pytest.fixture(scope="module")
def merchants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("keys")
    init_keyset(root / "keys", root / "zhangben.toml", "http://ledger", "http://wechat")
    settings = load_settings({"ZHANGBEN_CONFIG": str(root / "zhangben.toml")})
    return dict(load_merchants(settings.merchants, settings.config_path))


@pytest.fixture
def world(merchants: dict[str, object]) -> Iterator[tuple[PaymentService, FakeWechat]]:
    wechat = FakeWechat({k: m for k, m in merchants.items() if not m.is_v2})  # type: ignore[attr-defined]
    ledger = open_ledger("memory://", create_tables=True)
    try:
        yield PaymentService(Rooms.over(ledger), wechat), wechat  # type: ignore[arg-type]
    finally:
        ledger.close()


def refunding(service: PaymentService) -> RefundService:
    """The refunds and reviews over the same store and the same (fake) WeChat."""
    return RefundService(service, Refunds(service.ledger), Reviews(service.ledger))


def paid_order(service: PaymentService, wechat: FakeWechat, no: str, amount: int, total: int | None = None) -> str:
    answer = service.create_order(NewOrder(MCHID, no, OrderTerms(amount, "茶", "native")))
    out_trade_no = answer.checkout.payment.out_trade_no
    service.apply_transaction(wechat.pay(out_trade_no, total), "notification")
    return out_trade_no


def announced(service: PaymentService, no: str) -> list[str]:
    order = service.ledger.get_order(MCHID, no)
    events = list(service.ledger.repository.event_store.get(order.id))
    versions = paid_announcements(events)
    return [type(e).__name__ for e in events if e.originator_version in versions]


def test_an_order_paid_in_full_is_announced_at_once(world: tuple[PaymentService, FakeWechat]) -> None:
    service, wechat = world
    paid_order(service, wechat, "U-1", 1000)
    assert service.reads.order_view(MCHID, "U-1")["status"] == "PAID"
    assert announced(service, "U-1") == ["Paid"]


def test_a_refused_review_refund_keeps_the_review_and_the_retry_makes_a_new_refund(
    world: tuple[PaymentService, FakeWechat],
) -> None:
    service, wechat = world
    out_trade_no = paid_order(service, wechat, "U-2", 1000, total=1500)
    assert service.reads.order_view(MCHID, "U-2")["status"] == "NEEDS_REVIEW"
    assert announced(service, "U-2") == []  # 1,500 for 1,000: not "paid" to the shop
    wechat.refuse_refunds = "NOT_ENOUGH"
    with pytest.raises(WechatPayBusinessError):
        refunding(service).resolve_review(MCHID, "U-2", "多付 5 元", "refund", "merchant k1")
    assert service.reads.order_view(MCHID, "U-2")["status"] == "NEEDS_REVIEW"
    wechat.refuse_refunds = ""
    order = refunding(service).resolve_review(MCHID, "U-2", "多付 5 元", "refund", "merchant k1")
    assert order.resolution is not None and order.resolution["out_refund_no"] == f"RV{out_trade_no}-2"
    assert wechat.refunds[f"RV{out_trade_no}-2"]["refund"] == 500
    assert announced(service, "U-2") == ["ReviewResolved"]
    # WeChat closes that refund later: back in review, with why; the next try is a third number
    refunding(service).apply_refund(MCHID, wechat.settle(f"RV{out_trade_no}-2", "CLOSED"))
    view = service.reads.order_view(MCHID, "U-2")
    assert view["status"] == "NEEDS_REVIEW" and view["review_reasons"] == [REVIEW_REFUND_FAILED]
    order = refunding(service).resolve_review(MCHID, "U-2", "再退一次", "refund", "merchant k1")
    assert order.resolution is not None and order.resolution["out_refund_no"] == f"RV{out_trade_no}-3"
    assert announced(service, "U-2") == ["ReviewResolved"]  # announced once, by the first resolution


def test_an_abnormal_review_refund_reopens_the_review_until_it_is_finished(
    world: tuple[PaymentService, FakeWechat],
) -> None:
    service, wechat = world
    out_trade_no = paid_order(service, wechat, "U-3", 1000, total=1200)
    refunding(service).resolve_review(MCHID, "U-3", "多付 2 元", "refund", "merchant k1")
    refunding(service).apply_refund(MCHID, wechat.settle(f"RV{out_trade_no}", "ABNORMAL"))
    assert service.reads.order_view(MCHID, "U-3")["review_reasons"] == [REVIEW_REFUND_FAILED]
    with pytest.raises(Conflict, match="ABNORMAL"):  # finish it, do not replace it
        refunding(service).resolve_review(MCHID, "U-3", "多付 2 元", "refund", "merchant k1")
    refunding(service).handle_abnormal_refund(MCHID, f"RV{out_trade_no}", "settled_offline", "现金退还", "merchant k1")
    view = service.reads.order_view(MCHID, "U-3")
    assert view["review_reasons"] == [] and view["status"] in ("PAID", "PARTIALLY_REFUNDED")


def test_closing_an_attempt_wechat_says_is_paid_records_the_payment(world: tuple[PaymentService, FakeWechat]) -> None:
    service, wechat = world
    answer = service.create_order(NewOrder(MCHID, "U-4", OrderTerms(300, "茶", "native")))
    wechat.pay(answer.checkout.payment.out_trade_no)  # the notification is lost
    with pytest.raises(InvalidTransition):
        service.close_order(MCHID, "U-4")  # WeChat answers ORDERPAID: the ledger learns of the payment instead
    assert service.reads.order_view(MCHID, "U-4")["status"] == "PAID"
    assert f"query {answer.checkout.payment.out_trade_no}" in wechat.calls


def test_the_same_notification_twice_changes_the_ledger_once(world: tuple[PaymentService, FakeWechat]) -> None:
    service, wechat = world
    answer = service.create_order(NewOrder(MCHID, "U-5", OrderTerms(300, "茶", "native")))
    notice = wechat.pay(answer.checkout.payment.out_trade_no)
    first = service.apply_transaction(notice, "notification")
    again = service.apply_transaction(notice, "query")
    assert first is not None and first.changed and again is not None and not again.changed
    order: Order = service.ledger.get_order(MCHID, "U-5")
    assert order.paid_fen == 300 and len(order.captured) == 1
