from collections.abc import Callable
from datetime import timedelta

import pytest

from domain.errors import InvalidTransition, RefundConflict, RefundExceedsPaid, RefundLimitReached
from domain.order import (
    AMOUNT_MISMATCH,
    DUPLICATE_PAYMENT,
    MAX_REFUNDS_PER_ORDER,
    PAID_AFTER_CLOSE,
    REVIEW_REFUND_FAILED,
    RULES,
    Order,
    paid_announcements,
)
from domain.status import OrderStatus as S
from tests.unit.builders import T0, new_order, order_in

COMMANDS: dict[str, Callable[[Order], None]] = {
    "start a payment attempt": lambda o: o.start_attempt(o.next_out_trade_no(), "native", None, T0),
    "close": lambda o: o.close(T0, "test"),
    "expire": lambda o: o.expire(T0),
    "request a refund": lambda o: o.reserve_refund("R-new", o.paid_out_trade_no or "x", 1),
    "resolve a review": lambda o: o.resolve_review("checked", T0),
}
# A repeat of a command that already took effect is a no-op, not a refusal.
IDEMPOTENT_REPEATS = {("close", S.CLOSED), ("expire", S.EXPIRED)}


def test_every_command_has_a_rule() -> None:
    assert set(COMMANDS) == set(RULES)


@pytest.mark.parametrize(
    ("command", "status"),
    [(c, s) for c in RULES for s in S if s not in RULES[c] and (c, s) not in IDEMPOTENT_REPEATS],
)
def test_forbidden_transitions_raise_and_emit_nothing(command: str, status: S) -> None:
    order = order_in(status)
    order.collect_events()
    version = order.version
    with pytest.raises(InvalidTransition) as info:
        COMMANDS[command](order)
    assert info.value.status == status.value
    assert command in str(info.value)
    assert order.collect_events() == []
    assert order.version == version and order.status is status


def test_paid_by_exactly_one_payment_and_a_second_success_is_kept_for_review() -> None:
    order = order_in(S.PAYING)
    first = order.attempts[0]
    order.start_attempt(order.next_out_trade_no(), "native", None, T0)
    second = order.attempts[1]
    order.record_payment(first, "tx-1", 1000, T0)
    order.record_payment(second, "tx-2", 1000, T0)
    assert order.status is S.NEEDS_REVIEW
    assert order.paid_out_trade_no == first and order.paid_fen == 1000
    assert order.taken_fen == 2000 and order.review_reasons == [DUPLICATE_PAYMENT]
    # the duplicate can be refunded in full, the first too: nothing is stuck
    order.reserve_refund("R-dup", second, 1000)
    assert order.refundable_fen(second) == 0


def test_the_same_success_twice_changes_nothing() -> None:
    order = order_in(S.PAID)
    order.collect_events()
    order.record_payment(order.paid_out_trade_no, "tx-1", 1000, T0)
    assert order.collect_events() == []


def test_payment_after_expiry_is_recorded_and_pays_the_order() -> None:
    order = order_in(S.EXPIRED)
    order.record_payment(order.attempts[0], "tx-1", 1000, T0 + timedelta(hours=1))
    assert order.status is S.PAID


def test_payment_after_close_is_recorded_and_needs_review() -> None:
    order = order_in(S.CLOSED)
    order.record_payment(order.attempts[0], "tx-1", 1000, T0)
    assert order.status is S.NEEDS_REVIEW and order.paid_fen == 1000
    assert order.review_reasons == [PAID_AFTER_CLOSE]


def test_a_total_that_differs_from_the_amount_needs_review() -> None:
    order = order_in(S.PAYING)
    order.record_payment(order.attempts[0], "tx-1", 1, T0)
    assert order.status is S.NEEDS_REVIEW and order.review_reasons == [AMOUNT_MISMATCH]
    assert order.paid_fen == 1
    order.resolve_review("refunded by phone", T0)
    assert order.status is S.PAID


def test_refunds_accumulate_and_never_exceed_what_was_paid() -> None:
    order = order_in(S.PAID)
    otn = order.paid_out_trade_no
    order.reserve_refund("R1", otn, 300)
    order.reserve_refund("R2", otn, 300)
    with pytest.raises(RefundExceedsPaid) as info:
        order.reserve_refund("R3", otn, 401)
    assert info.value.refundable_fen == 400
    order.settle_refund("R1", T0)
    assert order.status is S.PARTIALLY_REFUNDED and order.refunded_fen == 300
    order.release_refund("R2", "closed")
    order.reserve_refund("R3", otn, 700)
    order.settle_refund("R3", T0)
    assert order.status is S.REFUNDED and order.refunded_fen == 1000


def test_refund_request_is_idempotent_by_out_refund_no() -> None:
    order = order_in(S.PAID)
    otn = order.paid_out_trade_no
    order.reserve_refund("R1", otn, 300)
    order.collect_events()
    order.reserve_refund("R1", otn, 300)
    assert order.collect_events() == []
    with pytest.raises(RefundConflict):
        order.reserve_refund("R1", otn, 301)


def test_at_most_fifty_refunds() -> None:
    order = order_in(S.PAID)
    otn = order.paid_out_trade_no
    for i in range(MAX_REFUNDS_PER_ORDER):
        order.reserve_refund(f"R{i}", otn, 1)
    with pytest.raises(RefundLimitReached):
        order.reserve_refund("R-too-many", otn, 1)


def test_a_settled_refund_cannot_be_released_nor_a_released_one_settled() -> None:
    order = order_in(S.PAID)
    otn = order.paid_out_trade_no
    order.reserve_refund("R1", otn, 100)
    order.reserve_refund("R2", otn, 100)
    order.settle_refund("R1", T0)
    order.release_refund("R2", "closed")
    with pytest.raises(InvalidTransition):
        order.release_refund("R1", "closed")
    with pytest.raises(InvalidTransition):
        order.settle_refund("R2", T0)


def test_event_bodies_replay_to_the_same_state() -> None:
    order = order_in(S.PARTIALLY_REFUNDED)
    events = order.collect_events()
    replayed = None
    for event in events:
        replayed = event.mutate(replayed)
    assert vars(replayed) == {k: v for k, v in vars(order).items() if k != "_pending_events"} | {"_pending_events": []}


def test_new_order_starts_created() -> None:
    assert new_order().status is S.CREATED


# -- a review resolved by a refund, and the shop's "paid" (issue 23, points 1 and 2) ------------------------------


def overpaid(total: int = 1500) -> tuple[Order, str]:
    order = order_in(S.PAYING)
    otn = order.attempts[0]
    order.record_payment(otn, "tx-1", total, T0)
    return order, otn


def test_a_retry_after_a_closed_review_refund_makes_a_new_refund_number() -> None:
    order, otn = overpaid()
    number, target, amount = order.review_refund(None)
    assert (number, target, amount) == (f"RV{otn}", otn, 500)
    order.reserve_refund(number, target, amount)
    assert order.review_refund(None)[0] == number  # still alive: a retry finds it
    order.release_refund(number, "refused by WeChat")
    assert order.status is S.NEEDS_REVIEW  # it never resolved the review
    with pytest.raises(RefundConflict):
        order.resolve_review("退多付部分", T0, "refund", "merchant k1", number)  # a dead refund resolves nothing
    again, _, amount = order.review_refund(None)
    assert (again, amount) == (f"RV{otn}-2", 500)
    order.reserve_refund(again, otn, amount)
    assert order.resolve_review("退多付部分", T0, "refund", "merchant k1", again)
    assert order.status is S.PAID
    order.release_refund(again, "closed by WeChat")  # closed after the resolution: back in review, with why
    assert order.status is S.NEEDS_REVIEW and order.review_reasons == [REVIEW_REFUND_FAILED]
    assert order.review_refund(None)[0] == f"RV{otn}-3"


def test_an_abnormal_review_refund_reopens_the_review_until_it_succeeds() -> None:
    order, otn = overpaid()
    number, _, amount = order.review_refund(None)
    order.reserve_refund(number, otn, amount)
    order.resolve_review("退多付部分", T0, "refund", "merchant k1", number)
    order.refund_abnormal(number)
    order.refund_abnormal(number)  # told twice: one review
    assert order.status is S.NEEDS_REVIEW and order.review_reasons == [REVIEW_REFUND_FAILED]
    assert order.review_refund(None)[0] == number  # not dead: it is to be finished, not replaced
    order.settle_refund(number, T0)  # finished by a person (bank card or offline)
    assert order.status is S.PARTIALLY_REFUNDED and order.review_reasons == [] and order.refunded_fen == 500


def test_a_refund_that_did_not_resolve_a_review_reopens_nothing() -> None:
    order = order_in(S.PAID)
    order.reserve_refund("R1", order.paid_out_trade_no or "", 100)
    order.refund_abnormal("R1")
    order.release_refund("R1", "closed by WeChat")
    assert order.status is S.PAID


def announced(order: Order) -> list[str]:
    events = order.collect_events()
    versions = paid_announcements(events)
    return [type(e).__name__ for e in events if e.originator_version in versions]


def test_only_an_order_paid_in_full_is_announced_paid() -> None:
    order = order_in(S.PAYING)
    order.record_payment(order.attempts[0], "tx-1", 1000, T0)
    assert announced(order) == ["Paid"]


def test_an_underpaid_order_is_announced_paid_only_once_a_person_accepts_it() -> None:
    order = order_in(S.PAYING)
    order.record_payment(order.attempts[0], "tx-1", 800, T0)
    assert announced(order) == []
    order = order_in(S.PAYING)
    order.record_payment(order.attempts[0], "tx-1", 800, T0)
    order.resolve_review("顾客线下补了 2 元", T0, "accept", "merchant k1")
    assert announced(order) == ["ReviewResolved"]


def test_an_overpaid_order_is_announced_paid_once_its_surplus_goes_back_even_if_reviewed_again() -> None:
    order, otn = overpaid()
    number, _, amount = order.review_refund(None)
    order.reserve_refund(number, otn, amount)
    order.resolve_review("退多付部分", T0, "refund", "merchant k1", number)
    order.release_refund(number, "closed by WeChat")
    again, _, amount = order.review_refund(None)
    order.reserve_refund(again, otn, amount)
    order.resolve_review("再退一次", T0, "refund", "merchant k1", again)
    assert announced(order) == ["ReviewResolved"]  # the first resolution only


def test_a_duplicate_payment_never_holds_back_the_first_announcement() -> None:
    order = order_in(S.PAYING)
    first = order.attempts[0]
    order.start_attempt(order.next_out_trade_no(), "native", None, T0)
    order.record_payment(first, "tx-1", 1000, T0)
    order.record_payment(order.attempts[1], "tx-2", 1000, T0)
    number, target, amount = order.review_refund(None)
    order.reserve_refund(number, target, amount)
    order.resolve_review("重复支付", T0, "refund", "merchant k1", number)
    assert announced(order) == ["Paid"]


def test_a_payment_after_close_given_back_whole_is_never_announced_paid() -> None:
    order = order_in(S.CLOSED)
    otn = order.attempts[0]
    order.record_payment(otn, "tx-1", 1000, T0)
    number, _, amount = order.review_refund(None)
    assert amount == 1000
    order.reserve_refund(number, otn, amount)
    order.resolve_review("订单已关闭，全额退回", T0, "refund", "merchant k1", number)
    assert announced(order) == []
