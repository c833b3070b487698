from collections.abc import Callable

import pytest

from domain.errors import InvalidTransition, TransactionConflict
from domain.notification import Notification
from domain.payment import RULES, Payment
from domain.status import PaymentStatus as S
from tests.unit.builders import T0, new_payment, payment_in

COMMANDS: dict[str, Callable[[Payment], object]] = {
    "record a prepay": lambda p: p.record_prepay("another-prepay", None, None, T0),
    "mark failed": lambda p: p.mark_failed("PAYERROR", "x", T0),
    "close": lambda p: p.close(T0, "test"),
    "expire": lambda p: p.expire(T0),
    "mark paid": lambda p: p.mark_paid("tx-1", 1000, 1000, T0, "query"),
}
IDEMPOTENT_REPEATS = {("mark failed", S.FAILED), ("close", S.CLOSED), ("expire", S.EXPIRED), ("mark paid", S.PAID)}


def test_every_command_has_a_rule() -> None:
    assert set(COMMANDS) == set(RULES)


@pytest.mark.parametrize(
    ("command", "status"),
    [(c, s) for c in RULES for s in S if s not in RULES[c] and (c, s) not in IDEMPOTENT_REPEATS],
)
def test_forbidden_transitions_raise_and_emit_nothing(command: str, status: S) -> None:
    payment = payment_in(status)
    payment.collect_events()
    with pytest.raises(InvalidTransition):
        COMMANDS[command](payment)
    assert payment.collect_events() == [] and payment.status is status


@pytest.mark.parametrize("status", [S.CREATED, S.PREPAID, S.FAILED, S.CLOSED, S.EXPIRED])
def test_a_success_is_recorded_from_every_status_but_paid(status: S) -> None:
    payment = payment_in(status)
    assert payment.mark_paid("tx-9", 1000, 900, T0, "notification") is True
    assert payment.status is S.PAID and payment.transaction_id == "tx-9"


def test_the_same_success_again_is_a_no_op_and_another_transaction_a_conflict() -> None:
    payment = payment_in(S.PAID)
    payment.collect_events()
    assert payment.mark_paid("tx-1", 1000, 1000, T0, "query") is False
    assert payment.collect_events() == []
    with pytest.raises(TransactionConflict):
        payment.mark_paid("tx-2", 1000, 1000, T0, "query")


def test_a_total_that_differs_is_recorded_with_the_mismatch() -> None:
    payment = new_payment(amount_fen=1000)
    payment.mark_paid("tx-1", 990, 990, T0, "notification")
    kinds = [type(e).__name__ for e in payment.collect_events()]
    assert kinds == ["Created", "Paid", "AmountMismatched"]
    assert payment.amount_mismatch and payment.total_fen == 990


def test_a_notification_is_kept_once_per_id() -> None:
    payment = payment_in(S.PREPAID)
    notification = Notification("n1", "TRANSACTION.SUCCESS", {"a": "b"}, "{}", {})
    assert payment.record_notification(notification, T0) is True
    assert payment.record_notification(notification, T0) is False
    assert payment.notification_ids == ["n1"]


def test_the_same_prepay_again_is_a_no_op() -> None:
    payment = payment_in(S.PREPAID)
    payment.collect_events()
    payment.record_prepay("wx-prepay", None, None, T0)
    assert payment.collect_events() == []
