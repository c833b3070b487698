"""The ledger's event store: loading and saving aggregates, and the one rule for racing commands.

Every use case lives in a room of its own (``application.orders``,
``refunds``, ``bills``, ``apikeys``, ``catalogue``, ``audit``, ``reads``),
each given this store when it is wired (``application.rooms``).  Each
command loads what it needs, asks the aggregates to decide, and saves every
changed aggregate in one ``save()`` — one database transaction.  Two
processes racing on the same command collide on the event store's primary
key (``IntegrityError``); the command is then re-run on fresh state
(``retry_on_conflict``), where the idempotency checks make the loser a
no-op.  The shape follows the library's own example application
(https://eventsourcing.readthedocs.io/en/stable/topics/application.html).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, Protocol, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import IntegrityError

from adapters.recorders import existing, read_streams, replay
from domain import ids
from domain.errors import ConcurrencyConflict, OrderNotFound, PaymentNotFound, RefundNotFound
from domain.order import Order
from domain.payment import Payment
from domain.refund import Refund

P = ParamSpec("P")
R = TypeVar("R")

# Where "now" comes from: injected (``bootstrap.clock``), never read inside an event.
Clock = Callable[[], datetime]

MAX_CONFLICT_ATTEMPTS = 8


def retry_on_conflict(command: Callable[P, R]) -> Callable[P, R]:
    """Re-run a whole command on fresh state after an optimistic-concurrency loss."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, MAX_CONFLICT_ATTEMPTS + 1):
            try:
                return command(*args, **kwargs)
            except IntegrityError:
                if attempt == MAX_CONFLICT_ATTEMPTS:
                    break
                time.sleep(_jitter(attempt))
        raise _still_conflicting(command.__name__)

    return wrapper


def _jitter(attempt: int) -> float:
    return random.uniform(0, 0.005 * 2**attempt)  # noqa: S311 — jitter, not a secret


def _still_conflicting(name: str) -> ConcurrencyConflict:
    return ConcurrencyConflict(f"{name}: still conflicting after {MAX_CONFLICT_ATTEMPTS} attempts; retry later")


# -- a command written once, run on a thread or on the event loop -------------------------------------------


@dataclass(frozen=True)
class Load:
    """A command's step: read these aggregates (in one round trip; absent ones left out of the answer)."""

    ids: tuple[UUID, ...]


@dataclass(frozen=True)
class Save:
    """A command's step: save these aggregates' new events, all in one transaction."""

    aggregates: tuple[Any, ...]


# A command as a generator of its reads and its save: it decides, the runner does the I/O (``run_steps`` on the
# synchronous store, ``run_steps_async`` on the event loop), so the hot path has one body for both.
Steps = Generator[Load | Save, Any, R]


class AsyncStore(Protocol):
    """The event store from the event loop (``adapters.async_store``): no thread hop on the hot path."""

    async def load_many(self, aggregate_ids: Iterable[UUID]) -> dict[UUID, Any]: ...

    async def save(self, *aggregates: Any) -> None: ...

    async def drain(self) -> None: ...

    async def close(self) -> None: ...


def run_steps(ledger: Ledger, command: Callable[[], Steps[R]], name: str) -> R:
    """Run a command's steps on ``ledger``, re-run whole on fresh state after a conflict (``retry_on_conflict``)."""

    def once() -> R:
        steps, answer = command(), None
        while True:
            try:
                step = steps.send(answer)
            except StopIteration as done:
                return cast(R, done.value)
            answer = ledger.load_many(step.ids) if isinstance(step, Load) else ledger.save(*step.aggregates)

    once.__name__ = name
    return retry_on_conflict(once)()


async def run_steps_async(store: AsyncStore, command: Callable[[], Steps[R]], name: str) -> R:
    """The same on the event loop, through ``store``; a conflict re-runs it the same way."""
    for attempt in range(1, MAX_CONFLICT_ATTEMPTS + 1):
        steps, answer = command(), None
        try:
            while True:
                try:
                    step = steps.send(answer)
                except StopIteration as done:
                    return cast(R, done.value)
                if isinstance(step, Load):
                    answer = await store.load_many(step.ids)
                else:
                    await store.save(*step.aggregates)
                    answer = None
        except IntegrityError:
            if attempt == MAX_CONFLICT_ATTEMPTS:
                break
            await asyncio.sleep(_jitter(attempt))
    raise _still_conflicting(name)


class LedgerRepository(Repository[UUID]):
    """The library's repository, replaying with ``replay`` unless told otherwise."""

    def get(self, aggregate_id: UUID, *, version: int | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("projector_func", replay)
        return super().get(aggregate_id, version=version, **kwargs)


class Ledger(Application[UUID]):
    """The event store every room shares, and the clock its commands read."""

    name = "Ledger"  # pinned: the name sets the table names and the env prefix

    def __init__(self, env: dict[str, str] | None, clock: Clock) -> None:
        super().__init__(env)
        self.clock = clock
        # the same store from an event loop, where there is one (PostgreSQL in `serve`'s workers; bootstrap.wiring)
        self.async_store: AsyncStore | None = None

    def construct_repository(self) -> Repository[UUID]:
        """The library's repository (no aggregate cache: several processes write), replaying with ``replay``."""
        return LedgerRepository(event_store=self.events, snapshot_store=self.snapshots)

    def get_order(self, mchid: str, merchant_order_no: str) -> Order:
        try:
            return self.repository.get(ids.order_id(mchid, merchant_order_no))
        except AggregateNotFoundError:
            raise OrderNotFound(mchid, merchant_order_no) from None

    def get_payment(self, out_trade_no: str) -> Payment:
        try:
            return self.repository.get(ids.payment_id(out_trade_no))
        except AggregateNotFoundError:
            raise PaymentNotFound(out_trade_no) from None

    def get_refund(self, mchid: str, out_refund_no: str) -> Refund:
        try:
            return self.repository.get(ids.refund_id(mchid, out_refund_no))
        except AggregateNotFoundError:
            raise RefundNotFound(out_refund_no) from None

    def find(self, aggregate_id: UUID) -> Any:  # the aggregate class depends on the id
        """The aggregate, or None where there is none yet."""
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def payments(self, order: Order) -> list[Payment]:
        """Every attempt of the order, oldest first."""
        return [self.get_payment(otn) for otn in order.attempts]

    def refunds(self, order: Order) -> list[Refund]:
        """Every refund of the order, oldest first."""
        return [self.get_refund(order.mchid, no) for no in order.refunds]

    def streams(self, aggregate_ids: Iterable[UUID]) -> dict[UUID, list[DomainEvent]]:
        """The events of several aggregates, read in one query (``adapters.recorders``); absent ones are left out."""
        return read_streams(self.recorder, self.mapper, aggregate_ids)

    def events_of(self, aggregate_id: UUID) -> list[DomainEvent]:
        """One aggregate's events, oldest first."""
        # The store hands back the library's protocol type; every event we store is a ``DomainEvent``.
        return cast(list[DomainEvent], list(self.repository.event_store.get(aggregate_id)))

    def created(self, topic: str, after: int = 0, page: int = 1000) -> Iterator[Any]:
        """Every aggregate whose creation event has ``topic``, in the order created, read page by page from the
        log (each page's aggregates in one query)."""
        while notifications := self.recorder.select_notifications(after + 1, page, topics=[topic]):
            wanted = [ids.as_uuid(n.originator_id) for n in notifications]
            loaded = self.load_many(wanted)
            yield from (loaded[i] for i in wanted if i in loaded)
            if len(notifications) < page:
                return
            after = notifications[-1].id

    def known_payments(self, out_trade_nos: Iterable[str]) -> set[str]:
        """Which of these out_trade_no are attempts the ledger issued (one query)."""
        by_id = {ids.payment_id(otn): otn for otn in out_trade_nos}
        return {by_id[i] for i in existing(self.recorder, list(by_id))}

    def known_refunds(self, mchid: str, out_refund_nos: Iterable[str]) -> set[str]:
        """Which of these out_refund_no are the merchant's refunds in the ledger (one query)."""
        by_id = {ids.refund_id(mchid, no): no for no in out_refund_nos}
        return {by_id[i] for i in existing(self.recorder, list(by_id))}

    def load_many(self, aggregate_ids: Iterable[UUID]) -> dict[UUID, Any]:
        """Several aggregates in one round trip, as ``repository.get`` would give each (absent ones left out)."""
        return {i: replay(None, events) for i, events in self.streams(aggregate_ids).items()}

    @retry_on_conflict
    def record_wechat_calls(self, aggregate_id: UUID, exchanges: Sequence[Mapping[str, Any]]) -> None:
        """Keep requests to WeChat and its answers on the payment, refund or day's bill they were for."""
        aggregate = self.find(aggregate_id)
        if aggregate is not None and exchanges and aggregate.record_wechat_calls(exchanges):
            self.save(aggregate)
