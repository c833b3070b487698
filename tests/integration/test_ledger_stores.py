"""The application on real stores: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from types import UnionType
from uuid import UUID

import pytest

from adapters.persistence import DatabaseNotInitialised
from adapters.wechatpay.client import PrepayResult
from application.orders import Orders
from application.rooms import Rooms
from bootstrap.ledger import open_ledger
from domain.audit import Arrival, RefusedCallback
from domain.bill import BillSummary, DailyBill
from domain.errors import (
    InvalidAmount,
    InvalidInput,
    InvalidTransition,
    OrderConflict,
    ProductNotFound,
    RefundExceedsPaid,
    TransactionConflict,
)
from domain.index import TransactionIndex
from domain.notices import RefundNotice, TransactionNotice
from domain.notification import Notification
from domain.order import Order
from domain.payment import Payment
from domain.product import Product
from domain.refund import Refund
from domain.requests import NewRefund, OrderTerms
from tests.conftest import FakeClock

MCHID = "1900000001"


@pytest.fixture
def ledger(database_url: str, clock: FakeClock) -> Iterator[Rooms]:
    rooms = Rooms.over(open_ledger(database_url, create_tables=True, clock=clock))
    yield rooms
    rooms.close()


def pay(ledger: Rooms, out_trade_no: str, total: int, txn: str | None = None) -> None:
    ledger.orders.record_payment_success(
        TransactionNotice.paid(
            out_trade_no, txn or f"4200{out_trade_no}", total, ledger.store.clock(), payer_total_fen=total
        ),
        "notification",
    )


def test_create_order_is_idempotent_and_a_different_body_conflicts(ledger: Rooms) -> None:
    order, payment = ledger.orders.create_order(MCHID, "A-1", OrderTerms(1000, "tea", "native"))
    again, same_payment = ledger.orders.create_order(MCHID, "A-1", OrderTerms(1000, "tea", "native"))
    assert again.id == order.id and same_payment.out_trade_no == payment.out_trade_no
    with pytest.raises(OrderConflict):
        ledger.orders.create_order(MCHID, "A-1", OrderTerms(1001, "tea", "native"))
    # another merchant's order with the same number is another order
    other, _ = ledger.orders.create_order("1900000002", "A-1", OrderTerms(5, "tea", "native"))
    assert other.id != order.id


def test_bad_input_changes_nothing(ledger: Rooms) -> None:
    for kwargs, field in [
        ({"amount_fen": 0}, "amount_fen"),
        ({"amount_fen": 10.5}, "amount_fen"),
        ({"channel": "alipay"}, "channel"),
        ({"channel": "jsapi"}, "payer_openid"),
        ({"expire_seconds": 30}, "expire_seconds"),
    ]:
        body = {"amount_fen": 100, "description": "tea", "channel": "native"} | kwargs
        with pytest.raises(InvalidInput) as info:
            ledger.orders.create_order(MCHID, "B-1", OrderTerms(**body))
        assert info.value.field == field
    assert (ledger.store.recorder.max_notification_id() or 0) == 0


def test_create_pay_partial_refund_and_history(ledger: Rooms, clock: FakeClock) -> None:
    _, payment = ledger.orders.create_order(MCHID, "C-1", OrderTerms(1000, "tea", "native"))
    ledger.orders.record_prepay(payment, PrepayResult(code_url="weixin://wxpay/bizpayurl?pr=abc"))
    clock.advance(seconds=30)
    ledger.orders.record_notification(
        payment.out_trade_no,
        Notification("n-1", "TRANSACTION.SUCCESS", {"Wechatpay-Serial": "PUB_KEY_ID_1"}, "{}", {"a": 1}),
    )
    pay(ledger, payment.out_trade_no, 1000)
    before_refund = datetime.now().astimezone()
    ledger.refunds.request_refund(NewRefund(MCHID, "C-1", "RF-1", 300, "broken cup"))
    ledger.refunds.record_refund_result(
        MCHID, RefundNotice(out_refund_no="RF-1", status="PROCESSING", refund_id="5030001")
    )
    ledger.refunds.record_refund_result(
        MCHID, RefundNotice(out_refund_no="RF-1", status="SUCCESS", refund_id="5030001")
    )

    view = ledger.reads.order_view(MCHID, "C-1")
    assert (view["status"], view["paid_fen"], view["refunded_fen"]) == ("PARTIALLY_REFUNDED", 1000, 300)
    assert view["refunds"][0]["status"] == "SUCCESS"

    history = ledger.reads.order_history(MCHID, "C-1")
    kinds = [(e.aggregate, e.type) for e in history]
    assert kinds == [
        ("Order", "Created"),
        ("Order", "AttemptStarted"),
        ("Payment", "Created"),
        ("Payment", "Prepaid"),
        ("Payment", "Notified"),
        ("Payment", "Paid"),
        ("Order", "Paid"),
        ("Order", "RefundRequested"),
        ("Refund", "Requested"),
        ("Refund", "Submitted"),
        ("Refund", "Succeeded"),
        ("Order", "Refunded"),
    ]
    assert view["version"] == len(history)

    past = ledger.reads.order_state_as_of(MCHID, "C-1", before_refund)
    assert (past["status"], past["refunded_fen"], past["refunds"]) == ("PAID", 0, [])
    assert len(ledger.reads.order_history(MCHID, "C-1", before_refund)) == 7


def test_a_success_after_expiry_is_recorded(ledger: Rooms, clock: FakeClock) -> None:
    _, payment = ledger.orders.create_order(MCHID, "D-1", OrderTerms(500, "tea", "native", expire_seconds=60))
    clock.advance(minutes=2)
    ledger.orders.expire_payment(payment.out_trade_no)
    assert ledger.reads.order_view(MCHID, "D-1")["status"] == "EXPIRED"
    pay(ledger, payment.out_trade_no, 500)
    view = ledger.reads.order_view(MCHID, "D-1")
    assert view["status"] == "PAID" and view["payments"][0]["status"] == "PAID"


def test_a_second_attempt_paid_too_is_kept_and_needs_review(ledger: Rooms) -> None:
    _, first = ledger.orders.create_order(MCHID, "E-1", OrderTerms(800, "tea", "native"))
    second = ledger.orders.start_payment(ledger.store.get_order(MCHID, "E-1"))
    assert second.out_trade_no != first.out_trade_no
    pay(ledger, first.out_trade_no, 800)
    pay(ledger, second.out_trade_no, 800)
    view = ledger.reads.order_view(MCHID, "E-1")
    assert view["status"] == "NEEDS_REVIEW" and view["review_reasons"] == ["duplicate_payment"]
    refund = ledger.refunds.request_refund(
        NewRefund(MCHID, "E-1", "DUP-1", 800, "duplicate payment", second.out_trade_no)
    )
    assert refund.out_trade_no == second.out_trade_no
    with pytest.raises(InvalidTransition):
        ledger.orders.start_payment(ledger.store.get_order(MCHID, "E-1"))


def test_refunds_never_exceed_what_was_paid(ledger: Rooms) -> None:
    _, payment = ledger.orders.create_order(MCHID, "F-1", OrderTerms(1000, "tea", "native"))
    pay(ledger, payment.out_trade_no, 1000)
    ledger.refunds.request_refund(NewRefund(MCHID, "F-1", "F-R1", 600))
    with pytest.raises(RefundExceedsPaid):
        ledger.refunds.request_refund(NewRefund(MCHID, "F-1", "F-R2", 401))
    ledger.refunds.record_refund_result(MCHID, RefundNotice(out_refund_no="F-R1", status="CLOSED", refund_id="503"))
    ledger.refunds.request_refund(NewRefund(MCHID, "F-1", "F-R2", 1000))
    assert ledger.refunds.request_refund(NewRefund(MCHID, "F-1", "F-R2", 1000)).out_refund_no == "F-R2"


def test_one_transaction_id_cannot_pay_two_attempts(ledger: Rooms) -> None:
    _, a = ledger.orders.create_order(MCHID, "G-1", OrderTerms(100, "tea", "native"))
    _, b = ledger.orders.create_order(MCHID, "G-2", OrderTerms(100, "tea", "native"))
    pay(ledger, a.out_trade_no, 100, txn="42000000001")
    position = ledger.store.recorder.max_notification_id()
    with pytest.raises(TransactionConflict):
        pay(ledger, b.out_trade_no, 100, txn="42000000001")
    assert ledger.store.recorder.max_notification_id() == position


def _every_event_class() -> set[type]:
    classes = set()
    for aggregate in (Order, Payment, Refund, TransactionIndex, RefusedCallback, Product, DailyBill):
        for value in vars(aggregate).values():
            if isinstance(value, type) and value.__name__ != "Event" and getattr(value, "TOPIC", None):
                classes.add(value)
    classes.discard(Refund.Created)  # defined only to pin the library's default; never triggered
    return classes


def _drive_through_every_event(ledger: Rooms, clock: FakeClock) -> None:
    _, p1 = ledger.orders.create_order(
        MCHID, "H-1", OrderTerms(1000, "tea", "jsapi", payer_openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", attach="门店 1")
    )
    exchange = {
        "endpoint": "prepay",
        "method": "POST",
        "url": "https://api.mch.weixin.qq.com/v3/pay/transactions/jsapi",
        "request_body": '{"out_trade_no":"x"}',
        "status": 200,
        "response_headers": {"wechatpay-serial": "PUB_KEY_ID_0114232134912410000000000000"},
        "response_body": '{"prepay_id":"wx20"}',
        "error": "",
        "at": "2026-11-22T02:00:00+00:00",
        "duration_ms": 12,
    }
    ledger.orders.record_prepay(p1, PrepayResult(prepay_id="wx201410272009395522657a690389285100"), [exchange])
    ledger.orders.record_payment_failure(p1.out_trade_no, "PAYERROR", "余额不足")
    ledger.orders.record_notification(
        p1.out_trade_no,
        Notification(
            "n-9",
            "TRANSACTION.SUCCESS",
            {"Request-ID": "r"},
            '{"x":1}',
            {"amount": {"total": 999}, "payer": {"openid": "o"}},
        ),
    )
    pay(ledger, p1.out_trade_no, 999)  # Paid, AmountMismatched, NeedsReview
    ledger.reviews.note_review(MCHID, "H-1", "顾客说付了 9.99 元", "support 0123456789abcdef")
    ledger.reviews.resolve_review(MCHID, "H-1", "customer agreed", "accept", "merchant 0123456789abcdef")
    ledger.bills.record_bill_import(
        MCHID, date(2026, 11, 22), BillSummary(3, 1999, 100, 12, "sha1"), [exchange | {"endpoint": "bill"}]
    )
    figures = {"lines": 4, "income_fen": 1999, "refunds_fen": 100, "fees_fen": 12, "settlement_fen": 0}
    ledger.bills.record_fund_flow_import(
        MCHID, date(2026, 11, 22), figures | {"other_fen": 5, "closing_fen": 1892}, "sha1b"
    )
    ledger.bills.acknowledge_difference(
        MCHID, date(2026, 11, 22), "payment-42000", "测试单", "finance 0123456789abcdef"
    )
    refund = ledger.refunds.request_refund(NewRefund(MCHID, "H-1", "H-R1", 100))
    ledger.store.record_wechat_calls(
        refund.id, [exchange | {"endpoint": "refund", "url": "/v3/refund/domestic/refunds"}]
    )
    ledger.refunds.record_refund_result(
        MCHID, RefundNotice(out_refund_no="H-R1", status="PROCESSING", refund_id="503-1")
    )
    ledger.refunds.record_refund_result(MCHID, RefundNotice(out_refund_no="H-R1", status="ABNORMAL", refund_id="503-1"))
    ledger.refunds.record_refund_result(
        MCHID,
        RefundNotice(
            out_refund_no="H-R1",
            status="SUCCESS",
            refund_id="503-1",
            success_time=clock(),
            user_received_account="招商银行信用卡0403",
        ),
        notification=Notification("n-10", "REFUND.SUCCESS", {"Request-ID": "r"}, "{}", {"refund_status": "SUCCESS"}),
    )
    arrival = Arrival("/wechatpay/v3/notify", "127.0.0.1", {"Wechatpay-Signature": "x"}, b"{}")
    ledger.audit.record_refused_callback(arrival, "Wechatpay-Signature does not verify")
    ledger.refunds.request_refund(NewRefund(MCHID, "H-1", "H-R2", 100))
    ledger.refunds.record_refund_result(MCHID, RefundNotice(out_refund_no="H-R2", status="CLOSED", refund_id="503-2"))
    ledger.refunds.request_refund(NewRefund(MCHID, "H-1", "H-R3", 50))
    ledger.refunds.record_refund_result(MCHID, RefundNotice(out_refund_no="H-R3", status="ABNORMAL", refund_id="503-3"))
    ledger.refunds.handle_abnormal_refund(MCHID, "H-R3", "settled_offline", "现金退还", "merchant 0123456789abcdef")
    _, p2 = ledger.orders.create_order(MCHID, "H-2", OrderTerms(1000, "tea", "native"))
    ledger.orders.start_payment(ledger.store.get_order(MCHID, "H-2"))
    ledger.orders.close_payment(p2.out_trade_no, "replaced by a new attempt")
    ledger.orders.close_order(MCHID, "H-2")
    _, p3 = ledger.orders.create_order(MCHID, "H-3", OrderTerms(1000, "tea", "h5"))
    clock.advance(hours=1)
    ledger.orders.expire_payment(p3.out_trade_no)
    ledger.catalogue.save_product(MCHID, "cola-330", 350, "可乐")
    ledger.catalogue.save_product(MCHID, "cola-330", 300, "可乐", active=False)


def _check_type(value: object, annotation: object, where: str) -> None:
    if isinstance(annotation, str):
        annotation = eval(annotation, {"datetime": datetime, "UUID": UUID, "Any": typing.Any})  # noqa: S307 — the annotations are our own source text
    origin = typing.get_origin(annotation)
    if annotation is typing.Any:
        return
    if origin in (typing.Union, UnionType):
        assert any(_matches(value, a) for a in typing.get_args(annotation)), where
        return
    assert _matches(value, annotation), f"{where}: {type(value).__name__} is not {annotation}"


def _matches(value: object, annotation: object) -> bool:
    if annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation) or annotation
    if origin is datetime:
        return isinstance(value, datetime) and value.tzinfo is not None
    # exact types: a StrEnum coming back as str, or a str stored where an enum was, both fail here
    return type(value) is origin


def test_every_event_type_round_trips_through_the_store(ledger: Rooms, clock: FakeClock) -> None:
    _drive_through_every_event(ledger, clock)
    seen = set()
    for notification in ledger.store.recorder.select_notifications(1, 1000):
        event = ledger.store.mapper.to_domain_event(notification)
        cls = type(event)
        seen.add(cls)
        assert notification.topic == cls.TOPIC
        hints = typing.get_type_hints(cls)
        for name, annotation in hints.items():
            if name in ("originator_id", "originator_version", "originator_topic", "timestamp"):
                continue
            if name in vars(event):
                _check_type(getattr(event, name), annotation, f"{cls.TOPIC}.{name}")
    assert seen == _every_event_class()
    # and everything replays
    for no in ("H-1", "H-2", "H-3"):
        assert ledger.reads.order_view(MCHID, no)["version"] == len(ledger.reads.order_history(MCHID, no))
    assert ledger.reads.order_view(MCHID, "H-1")["status"] == "PARTIALLY_REFUNDED"
    assert ledger.reads.order_view(MCHID, "H-2")["status"] == "CLOSED"
    assert ledger.reads.order_view(MCHID, "H-3")["status"] == "EXPIRED"


def test_workers_do_not_create_tables(database_url: str) -> None:
    with pytest.raises(DatabaseNotInitialised, match="zhangben db init"):
        open_ledger(database_url, create_tables=False)
    open_ledger(database_url, create_tables=True).close()
    worker = open_ledger(database_url, create_tables=False)
    Orders(worker).create_order(MCHID, "I-1", OrderTerms(1, "tea", "native"))
    worker.close()


def test_expiry_waits_for_every_open_attempt(ledger: Rooms, clock: FakeClock) -> None:
    _, first = ledger.orders.create_order(MCHID, "J-1", OrderTerms(100, "tea", "native", expire_seconds=60))
    clock.advance(seconds=30)
    second = ledger.orders.start_payment(ledger.store.get_order(MCHID, "J-1"))
    clock.advance(seconds=40)
    ledger.orders.expire_payment(first.out_trade_no)
    assert ledger.reads.order_view(MCHID, "J-1")["status"] == "PAYING"
    clock.advance(seconds=40)
    ledger.orders.expire_payment(second.out_trade_no)
    assert ledger.reads.order_view(MCHID, "J-1")["status"] == "EXPIRED"
    assert clock() - timedelta(seconds=110) == ledger.store.get_order(MCHID, "J-1").created_at


def test_products_keep_their_price_history(ledger: Rooms) -> None:
    product, created = ledger.catalogue.save_product(MCHID, "cola-330", 350, "可乐")
    assert created and product.active
    assert ledger.catalogue.save_product(MCHID, "cola-330", 350, "可乐") == (
        ledger.catalogue.get_product(MCHID, "cola-330"),
        False,
    )
    version = ledger.catalogue.get_product(MCHID, "cola-330").version
    ledger.catalogue.save_product(MCHID, "cola-330", 350, "可乐")  # the same terms: no event
    assert ledger.catalogue.get_product(MCHID, "cola-330").version == version
    ledger.catalogue.save_product(MCHID, "cola-330", 300, "可乐 330ml", active=False)
    changed = ledger.catalogue.get_product(MCHID, "cola-330")
    assert (changed.amount_fen, changed.description, changed.active) == (300, "可乐 330ml", False)
    assert ledger.store.repository.get(changed.id, version=version).amount_fen == 350  # the price a past scan paid
    assert [p.product_id for p in ledger.catalogue.products(MCHID)] == ["cola-330"]
    assert ledger.catalogue.products("someone-else") == []
    with pytest.raises(ProductNotFound):
        ledger.catalogue.get_product("someone-else", "cola-330")
    with pytest.raises(InvalidInput):
        ledger.catalogue.save_product(MCHID, "bad id!", 1, "x")
    with pytest.raises(InvalidAmount):
        ledger.catalogue.save_product(MCHID, "p2", 0, "x")
