"""Random command sequences against the ledger, with the money invariants checked after every step.

WeChat is modelled as the source of truth for money taken: every success it
reports is remembered here, and the ledger must account for all of it.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from application.rooms import Rooms
from bootstrap.ledger import open_ledger
from domain.errors import (
    InvalidTransition,
    LedgerError,
    OrderConflict,
    OrderNotFound,
    RefundConflict,
    RefundExceedsPaid,
    RefundLimitReached,
    TransactionConflict,
)
from domain.notices import RefundNotice, TransactionNotice
from domain.order import Order
from domain.requests import NewRefund, OrderTerms
from domain.status import OrderStatus

MCHID = "1900000001"
ORDER_NOS = ["A", "B", "C"]
REFUND_NOS = ["R1", "R2", "R3", "R4"]
REFUND_RESULTS = ["PROCESSING", "SUCCESS", "CLOSED", "ABNORMAL"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 2, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def status_from_events(events: list[Any]) -> OrderStatus:
    """An independent reading of an order's status from its event types alone."""
    status = OrderStatus.CREATED
    review = False
    primary: str | None = None
    paid = 0
    refunds: dict[str, tuple[str, int]] = {}
    settled: dict[str, int] = {}

    def money_status() -> OrderStatus:
        if review:
            return OrderStatus.NEEDS_REVIEW
        done = sum(a for no, a in settled.items() if refunds[no][0] == primary)
        if done == 0:
            return OrderStatus.PAID
        return OrderStatus.REFUNDED if done >= paid else OrderStatus.PARTIALLY_REFUNDED

    for e in events:
        kind = type(e).__name__
        if kind == "AttemptStarted":
            status = OrderStatus.PAYING
        elif kind == "Paid":
            primary, paid = e.out_trade_no, e.total_fen
            status = money_status()
        elif kind == "NeedsReview":
            review, status = True, OrderStatus.NEEDS_REVIEW
        elif kind == "ReviewResolved":
            review = False
            status = money_status()
        elif kind == "RefundRequested":
            refunds[e.out_refund_no] = (e.out_trade_no, e.amount_fen)
        elif kind == "Refunded":
            settled[e.out_refund_no] = e.amount_fen
            status = money_status()
        elif kind == "RefundReleased":
            status = money_status()
        elif kind == "Closed":
            status = OrderStatus.CLOSED
        elif kind == "Expired":
            status = OrderStatus.EXPIRED
    return status


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Rooms.over(open_ledger("memory://", create_tables=True, clock=Clock()))
        self.wechat_took: dict[str, tuple[str, int]] = {}  # out_trade_no → (transaction_id, total)
        self.success_calls: list[tuple[str, str, int]] = []
        self.touched: list[Any] = []

    def teardown(self) -> None:
        self.ledger.close()

    # -- helpers ----------------------------------------------------------------

    def _order(self, no: str) -> Order | None:
        try:
            return self.ledger.store.get_order(MCHID, no)
        except OrderNotFound:
            return None

    def _position(self) -> int:
        return self.ledger.store.recorder.max_notification_id() or 0

    def _refused(self, call: Any, *allowed: type[LedgerError]) -> Any:
        """Run a command; a refusal must be one of ``allowed`` and store nothing."""
        before = self._position()
        try:
            result = call()
        except allowed:
            assert self._position() == before, "a refused command stored events"
            return None
        self.touched += list(result) if isinstance(result, tuple) else [result]
        return result

    def _attempts(self) -> list[str]:
        return [otn for no in ORDER_NOS if (o := self._order(no)) for otn in o.attempts]

    # -- rules ------------------------------------------------------------------

    @rule(
        no=st.sampled_from(ORDER_NOS),
        amount=st.sampled_from([1000, 1000, 2500]),
        channel=st.sampled_from(["native", "native", "app"]),
    )
    def create_order(self, no: str, amount: int, channel: str) -> None:
        existing = self._order(no)
        result = self._refused(
            lambda: self.ledger.orders.create_order(MCHID, no, OrderTerms(amount, "goods", channel)), OrderConflict
        )
        if existing is None:
            assert result is not None
        elif existing.terms.amount_fen != amount or existing.terms.channel != channel:
            assert result is None, "a different body under the same order number was accepted"
        else:
            assert result is not None and result[0].id == existing.id

    @rule(no=st.sampled_from(ORDER_NOS))
    def start_payment(self, no: str) -> None:
        self._refused(
            lambda: self.ledger.orders.start_payment(self.ledger.store.get_order(MCHID, no)),
            InvalidTransition,
            OrderNotFound,
        )

    @precondition(lambda self: self._attempts())
    @rule(data=st.data(), delta=st.sampled_from([0, 0, 0, -1, 1]))
    def wechat_reports_success(self, data: st.DataObject, delta: int) -> None:
        otn = data.draw(st.sampled_from(self._attempts()))
        payment = self.ledger.store.get_payment(otn)
        txn, total = self.wechat_took.setdefault(otn, (f"42{otn}", payment.amount_fen + delta))
        outcome = self.ledger.orders.record_payment_success(
            TransactionNotice.paid(otn, txn, total, self.ledger.store.clock(), payer_total_fen=total), "notification"
        )
        self.success_calls.append((otn, txn, total))
        self.touched += [outcome.payment, outcome.order]

    @precondition(lambda self: self.success_calls)
    @rule(data=st.data())
    def duplicate_notification(self, data: st.DataObject) -> None:
        otn, txn, total = data.draw(st.sampled_from(self.success_calls))
        before = self._position()
        outcome = self.ledger.orders.record_payment_success(
            TransactionNotice.paid(otn, txn, total, self.ledger.store.clock(), payer_total_fen=total), "notification"
        )
        assert not outcome.changed and self._position() == before

    @precondition(lambda self: len(self.wechat_took) >= 2)
    @rule(data=st.data())
    def forged_transaction_reuse(self, data: st.DataObject) -> None:
        otns = sorted(self.wechat_took)
        a, b = data.draw(st.sampled_from(otns)), data.draw(st.sampled_from(otns))
        if a == b:
            return
        txn_of_b = self.wechat_took[b][0]
        self._refused(
            lambda: self.ledger.orders.record_payment_success(
                TransactionNotice.paid(a, txn_of_b, 1, self.ledger.store.clock(), payer_total_fen=1), "query"
            ),
            TransactionConflict,
        )

    @rule(no=st.sampled_from(ORDER_NOS))
    def close_order(self, no: str) -> None:
        self._refused(lambda: self.ledger.orders.close_order(MCHID, no), InvalidTransition, OrderNotFound)

    @precondition(lambda self: self._attempts())
    @rule(data=st.data())
    def expire_attempt(self, data: st.DataObject) -> None:
        otn = data.draw(st.sampled_from(self._attempts()))
        self._refused(lambda: self.ledger.orders.expire_payment(otn), InvalidTransition)

    @rule(
        no=st.sampled_from(ORDER_NOS),
        refund_no=st.sampled_from(REFUND_NOS),
        amount=st.sampled_from([1, 300, 700, 1000, 2500]),
    )
    def request_refund(self, no: str, refund_no: str, amount: int) -> None:
        self._refused(
            lambda: self.ledger.refunds.request_refund(NewRefund(MCHID, no, f"{no}-{refund_no}", amount)),
            InvalidTransition,
            OrderNotFound,
            RefundExceedsPaid,
            RefundConflict,
            RefundLimitReached,
        )

    @rule(no=st.sampled_from(ORDER_NOS), refund_no=st.sampled_from(REFUND_NOS), result=st.sampled_from(REFUND_RESULTS))
    def refund_result_arrives(self, no: str, refund_no: str, result: str) -> None:
        key = f"{no}-{refund_no}"
        if key not in (o.refunds if (o := self._order(no)) else {}):
            return
        self._refused(
            lambda: self.ledger.refunds.record_refund_result(
                MCHID, RefundNotice(out_refund_no=key, status=result, refund_id=f"50{key}")
            ),
            InvalidTransition,
        )

    @rule(no=st.sampled_from(ORDER_NOS))
    def resolve_review(self, no: str) -> None:
        self._refused(
            lambda: self.ledger.reviews.resolve_review(MCHID, no, "checked"), InvalidTransition, OrderNotFound
        )

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def money_adds_up(self) -> None:
        for no in ORDER_NOS:
            order = self._order(no)
            if order is None:
                continue
            took = sum(self.wechat_took[o][1] for o in order.attempts if o in self.wechat_took)
            assert order.taken_fen == took, "money WeChat took is missing from the ledger"
            assert order.refunded_fen <= order.taken_fen
            assert order.paid_fen <= took
            for otn, captured in order.captured.items():
                assert order.committed_fen(otn) <= captured

    @invariant()
    def one_paid_per_transaction(self) -> None:
        paid = Counter()
        for n in self.ledger.store.recorder.select_notifications(1, 100_000):
            if n.topic == "zhangben.Payment.Paid":
                paid[self.ledger.store.mapper.to_domain_event(n).transaction_id] += 1
        assert all(count == 1 for count in paid.values())
        assert set(paid) == {txn for txn, _ in self.wechat_took.values()}

    @invariant()
    def status_is_what_the_events_say(self) -> None:
        for no in ORDER_NOS:
            order = self._order(no)
            if order is not None:
                events = list(self.ledger.store.repository.event_store.get(order.id))
                assert order.status is status_from_events(events)

    @invariant()
    def replay_rebuilds_the_same_state(self) -> None:
        for aggregate in self.touched:
            stored = self.ledger.store.repository.get(aggregate.id)
            assert stored.version == aggregate.version
            assert _state(stored) == _state(aggregate)
        self.touched.clear()


def _state(aggregate: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


LedgerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestLedgerStateMachine = LedgerMachine.TestCase
