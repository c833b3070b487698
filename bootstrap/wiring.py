"""Everything a process needs, built once from the settings: the composition root.

The one module that knows every inner layer: it opens the ledger on the
configured database, builds the WeChat Pay client from the merchants'
settings, hands the ledger's event log to the projections, and hands the
read models to the use cases that read them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, cast

import httpx

from adapters import metrics, persistence, schemas
from adapters.async_store import AsyncEventStore
from adapters.bill_archive import BillArchive
from adapters.directory import Directory
from adapters.follower_leases import FollowerLeases
from adapters.leases import Leases
from adapters.recorders import LedgerPostgresRecorder
from adapters.refusals import RefusalCounter
from adapters.secretbox import DataKeys
from adapters.sessions import SessionKeys
from adapters.throttles import SharedThrottle
from adapters.viewdb import ViewDatabase
from adapters.webhooks import WebhookStore
from adapters.wechatpay.client import WechatPayClient
from adapters.wechatpay.config import load_merchants, load_providers
from adapters.wechatpay.merchant_book import MerchantBook
from adapters.wechatpay.platform import REFRESH_COOLDOWN_SECONDS
from adapters.wechatpay.v2_client import WechatPayV2Client
from application.apikeys import ApiKeys, move_keys_to_directory
from application.callbacks import Callbacks
from application.cashier_links import CashierLinks
from application.finance import Finance
from application.ledger import Clock, Ledger
from application.partitions import Partitions
from application.payers import Payers
from application.payments import PaymentService
from application.products import Products
from application.reads import OrderReads
from application.refunding import RefundService
from application.rooms import Rooms
from application.submerchants import SubMerchants
from application.webhooks import TIMEOUT as WEBHOOK_TIMEOUT
from application.webhooks import Webhooks
from bootstrap.clock import system_clock
from bootstrap.ledger import open_directory, open_store
from bootstrap.merchant_watch import watch_sub_merchants
from bootstrap.settings import DEFAULT_WECHATPAY_BASE_URL, MAIN_CELL, Settings, SettingsError
from domain.audit import RefusedCallback
from domain.errors import PaymentNotFound
from domain.payment import Payment
from projections.business_events import BusinessEvents
from projections.core import EventLog, Follower
from projections.journal import Journal
from projections.order_status import OrderStatusView
from projections.reconciliation import Reconciliation

log = logging.getLogger("zhangben.partitions")


@dataclass
class Views:
    """The read models and the followers that keep them up to date."""

    orders: OrderStatusView
    journal: Journal
    reconciliation: Reconciliation
    events: BusinessEvents
    followers: dict[str, Follower]


RETIRE_SECONDS = 30.0  # a moved partition's old runtime is closed this long after the new one took over
PAYMENTS_REMEMBERED = 10_000  # a payer's page asks again every few seconds: where its payment is, remembered


@dataclass
class Shared:
    """What a process's partitions share: the WeChat clients, the directory (placements, API keys, throttles)."""

    client: WechatPayClient
    v2: WechatPayV2Client
    directory_db: ViewDatabase
    keys_ledger: Ledger
    keys: ApiKeys
    placements: Partitions
    cashier: CashierLinks
    webhooks_http: httpx.Client  # one pool of connections to the merchants' endpoints for every partition
    sub_merchants: SubMerchants  # a service provider's, in the directory, followed by this process
    stop_watching: Callable[[], None] = lambda: None

    def close(self) -> None:
        self.stop_watching()
        self.webhooks_http.close()
        self.client.close_http()
        self.v2.close_http()
        self.directory_db.close()
        self.keys_ledger.close()


@dataclass
class Runtime:
    """One partition's stores and the use cases over them, with what every partition shares (``fleet``)."""

    settings: Settings
    ledger: Ledger
    rooms: Rooms
    client: WechatPayClient
    service: PaymentService
    refunding: RefundService
    payers: Payers
    callbacks: Callbacks
    finance: Finance
    db: ViewDatabase
    orders: OrderStatusView
    journal: Journal
    reconciliation: Reconciliation
    followers: dict[str, Follower]
    leases: Leases
    v2: WechatPayV2Client
    products: Products
    events: BusinessEvents
    webhooks: Webhooks
    cashier: CashierLinks
    number: int = 0  # the partition
    cell: str = MAIN_CELL  # the PostgreSQL cluster it lives on ([[cells]]; "main": the one database)
    fleet: Runtimes = field(init=False, repr=False)

    def close(self) -> None:
        """The whole process's runtime, from its first partition's (what a caller of ``build_runtime`` holds)."""
        self.fleet.close()

    def merchants(self) -> list[str]:
        """The configured merchants whose money is in this partition."""
        return [m for m in self.service.merchants if self.fleet.at(m) is self]

    def close_own(self) -> None:
        self.db.close()
        self.ledger.close()


@dataclass
class Runtimes:
    """Every partition's runtime in this process, and the way to a merchant's (docs/scale-out.md)."""

    settings: Settings
    shared: Shared
    partitions: list[Runtime]
    _where: dict[str, int] = field(default_factory=dict, repr=False)
    _payments: dict[str, int] = field(default_factory=dict, repr=False)  # out_trade_no → partition, found before
    _closed: bool = field(default=False, repr=False)
    # whether a cell is taking requests now (the HTTP workers' gates, api/db_gate.py): a merchant on a cell that
    # is failing over is answered 503 at once, and the other cells' merchants go on (docs/scale-out.md)
    cell_open: Callable[[str], bool] = field(default=lambda cell: True, repr=False)
    clock: Clock = field(default=system_clock, repr=False)
    # ``zhangben partitions move``: the partitions frozen for a move now (→ the cell they go to), and who is told
    # when a partition has been reopened on its new cell (with its old runtime, closed RETIRE_SECONDS later)
    frozen: dict[int, str] = field(default_factory=dict, repr=False)
    moved: list[Callable[[int, Runtime], None]] = field(default_factory=list, repr=False)

    @property
    def home(self) -> Runtime:
        """Partition 0: what belongs to no merchant is kept there (refused callbacks naming none)."""
        return self.partitions[0]

    @property
    def keys(self) -> ApiKeys:
        return self.shared.keys

    @property
    def placed(self) -> dict[str, int]:
        """The placements this process has read (a merchant's partition, once known, is known for good)."""
        return self._where

    def at(self, merchant: str) -> Runtime:
        """The runtime of ``merchant``'s partition; placements never change, so each is read once.

        No merchant (an operator's key, the deployment's own): the first partition.
        """
        if len(self.partitions) == 1 or not merchant:
            if self.frozen:
                self.check_not_frozen(0)
            return self.home
        number = self._where.get(merchant)
        if number is None:
            number = self._where[merchant] = self.shared.placements.partition_of(merchant)
        found = self.partitions[number]
        self.check_not_frozen(number)
        if not self.cell_open(found.cell):
            raise persistence.DatabaseUnavailable(f"cell {found.cell} is unavailable (failing over?); retry shortly")
        return found

    def check_not_frozen(self, number: int) -> None:
        """A partition frozen for a move takes no requests: a 503 to retry (WeChat's FAIL for a callback)."""
        to = self.frozen.get(number)
        if to is not None:
            raise persistence.PartitionFrozen(f"partition {number} is moving to cell {to}; retry in a few seconds")

    def follow(self, cells: dict[int, tuple[str, str, str | None]]) -> list[int]:
        """The directory's partition map now (``Directory.cells_now``): each partition frozen for a move answers
        503, and one whose cell changed is reopened there; returns the partitions reopened."""
        reopened = []
        for number, (schema, database, _) in cells.items():
            cell = self.settings.cell_name(database)
            if number < len(self.partitions) and cell != self.partitions[number].cell:
                self._reopen(number, schema, cell)
                reopened.append(number)
        self.frozen = {number: to for number, (_, _, to) in cells.items() if to is not None}
        return reopened

    def _reopen(self, number: int, schema: str, cell: str) -> None:
        old = self.partitions[number]
        store = partition_stores(self.settings, {number: (schema, cell)})[number]
        self.partitions[number] = self.adopt(
            _partition_runtime(self.settings, self.shared, store, number, self.clock), cell
        )
        log.info("partition %d: now on cell %s", number, cell)
        for listener in self.moved:
            listener(number, old)
        retire = threading.Timer(RETIRE_SECONDS, old.close_own)  # requests under way on it finish first
        retire.daemon = True
        retire.start()

    def adopt(self, rt: Runtime, database: str) -> Runtime:
        """``rt`` made one of this fleet's: its cell (``database`` in the map), callbacks and products routed by
        merchant."""
        rt.cell = self.settings.cell_name(database)
        rt.fleet = self
        # a callback names its merchant only once read: it is recorded in that merchant's partition
        rt.callbacks.route = lambda merchant: self.at(merchant).callbacks
        rt.products.route = lambda merchant: self.at(merchant).products
        return rt

    def cells(self) -> dict[str, list[Runtime]]:
        """Each cell's partitions in this process."""
        found: dict[str, list[Runtime]] = {}
        for rt in self.partitions:
            found.setdefault(rt.cell, []).append(rt)
        return found

    def payment(self, out_trade_no: str) -> tuple[Runtime, Payment]:
        """A payment found by its ``out_trade_no`` alone (a payer's link names no merchant), with its partition's
        runtime; raises ``PaymentNotFound``.  Where each was found is remembered (it never moves)."""
        known = self._payments.get(out_trade_no)
        frozen = None  # a partition frozen for a move is not asked: not found elsewhere, the answer is its 503
        for rt in [self.partitions[known]] if known is not None else self.partitions:
            if rt.number in self.frozen:
                frozen = rt.number
                continue
            try:
                payment = rt.ledger.get_payment(out_trade_no)
            except PaymentNotFound:
                continue
            if len(self._payments) >= PAYMENTS_REMEMBERED:
                self._payments.clear()
            self._payments[out_trade_no] = rt.number
            return rt, payment
        if frozen is not None:
            self.check_not_frozen(frozen)
        raise PaymentNotFound(out_trade_no)

    def refused_callbacks_seen_by(
        self, mchid: str | None, reason: str = "", start: datetime | None = None, end: datetime | None = None
    ) -> list[RefusedCallback]:
        """Refused callbacks a merchant's auditor sees (its partition's), or every partition's for the operator
        (``mchid`` None), oldest first."""
        if mchid:
            return self.at(mchid).rooms.audit.refused_callbacks_seen_by(mchid, reason, start, end)
        found = [
            r for rt in self.partitions for r in rt.rooms.audit.refused_callbacks_seen_by(None, reason, start, end)
        ]
        return sorted(found, key=lambda r: r.received_at)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for rt in reversed(self.partitions):
            rt.close_own()
        self.shared.close()


@dataclass(frozen=True)
class RoutedBooks:
    """Each merchant's finance books in its own partition, read as one: an export or a total over merchants on
    several partitions (``application.finance_exports.Books``, and its ``OrdersOn``)."""

    fleet: Runtimes

    def has_bill(self, mchid: str, bill_date: date) -> bool:
        return self.fleet.at(mchid).finance.has_bill(mchid, bill_date)

    def lines(self, mchid: str, bill_date: date) -> Iterator[dict[str, Any]]:
        return self.fleet.at(mchid).finance.lines(mchid, bill_date)

    def bill_totals(self, mchid: str, bill_date: date) -> dict[str, int]:
        return self.fleet.at(mchid).finance.bill_totals(mchid, bill_date)

    def journal_report(self, mchid: str, day_from: date, day_to: date) -> dict[str, Any]:
        return self.fleet.at(mchid).finance.journal_report(mchid, day_from, day_to)

    def fund_flow_if_imported(self, mchid: str, bill_date: date) -> dict[str, Any] | None:
        return self.fleet.at(mchid).finance.fund_flow_if_imported(mchid, bill_date)

    def orders_on(self, mchid: str, day_from: date, day_to: date) -> Iterator[dict[str, Any]]:
        return self.fleet.at(mchid).orders.created_on(mchid, day_from, day_to)


def event_log(ledger: Ledger) -> EventLog:
    """The ledger's log as the projections read it."""
    return EventLog(ledger.recorder, ledger.mapper, ledger.repository)


def build_views(ledger: Ledger, db: ViewDatabase, partition: int = 0) -> Views:
    log, reads = event_log(ledger), OrderReads(ledger)
    orders, journal = OrderStatusView(log, db, reads.views_of_many), Journal(log, db)
    events = BusinessEvents(log, db, reads.views_at_many, partition)
    followers: dict[str, Follower] = {p.name: Follower(log, db, p) for p in (orders, journal, events)}
    return Views(orders, journal, Reconciliation(db), events, followers)


def data_keys(settings: Settings) -> DataKeys | None:
    """The keyring that seals the secrets kept in the database, if one is configured."""
    return DataKeys(settings.data_key_file) if settings.data_key_file is not None else None


def reseal_secrets(settings: Settings) -> tuple[int, int]:
    """Every stored secret sealed under the keyring's first key: (webhook endpoints, session keys) changed."""
    box = data_keys(settings)
    db = ViewDatabase(persistence.parse_url(settings.database_url))
    try:
        return WebhookStore(db, box).reseal(), SessionKeys(db, box).reseal()
    finally:
        db.close()


def init_database(settings: Settings, *, clock: Clock = system_clock) -> None:
    """``zhangben db init``: the directory, then each partition's event store, views and leases, once.

    The directory comes first: it refuses a number of partitions other than
    the one the database was made with before any schema is made for it.
    """
    store = persistence.parse_url(settings.database_url)
    persistence.check_reachable(store, create=True)
    if store.kind != "postgres" and settings.partitions > 1:
        raise SettingsError(
            f"[partitioning] partitions = {settings.partitions} needs PostgreSQL: {store} holds one partition"
        )
    directory_store = store.in_schema(persistence.DIRECTORY_SCHEMA)
    schemas.prepare(directory_store)
    with closing(ViewDatabase(directory_store)) as db:
        directory = Directory(db)
        directory.create_tables()
        directory.fix_partitions(
            settings.partitions,
            {p: persistence.partition_schema(p) for p in range(settings.partitions)},
            settings.cell_names(),
        )
        where = partition_stores(settings, directory.databases())
    for cell in settings.cells[1:]:
        persistence.check_reachable(persistence.parse_url(cell.url))
    for partition_store in where.values():
        init_partition(settings, partition_store)
    with closing(ViewDatabase(directory_store)) as db:
        Partitions(Directory(db), clock).place_configured(settings.merchant_ids())
        SharedThrottle(db).create_tables()  # deployment-wide: platform certificate downloads, refused callbacks
        RefusalCounter(db).create_tables()
        FollowerLeases(db).create_tables(settings.partitions)  # which process follows which partition
    if store.kind == "postgres":  # SQLite's directory is the one file's log: its keys are where they were
        with closing(open_store(directory_store, create_tables=True)) as keys, closing(open_store(store)) as first:
            move_keys_to_directory(first, keys)


def partition_stores(settings: Settings, where: dict[int, tuple[str, str]]) -> dict[int, persistence.StoreUrl]:
    """Each partition's schema on its cell, from the directory's partition map (``Directory.databases()``)."""
    cells: dict[str, persistence.StoreUrl] = {}
    stores = {}
    for partition, (schema, cell) in where.items():
        if cell not in cells:
            cells[cell] = persistence.parse_url(settings.database_of(cell))
        stores[partition] = cells[cell].in_schema(schema)
    return stores


def init_partition(settings: Settings, store: persistence.StoreUrl) -> None:
    """One partition's tables: its event log (a database of before partitions moved into partition 0), views, state."""
    ledger = open_store(store, create_tables=True)
    db = ViewDatabase(store)
    try:
        views = build_views(ledger, db)
        for follower in views.followers.values():
            follower.create_tables()
        views.reconciliation.create_tables()
        BillArchive(db).create_tables()
        Leases(db).create_tables()
        box = data_keys(settings)
        webhooks, sessions = WebhookStore(db, box), SessionKeys(db, box)
        webhooks.create_tables()
        sessions.create_tables()
        # secrets kept in clear before sealing existed (or under a rotated-out key) are sealed now
        webhooks.reseal()
        sessions.reseal()
    finally:
        db.close()
        ledger.close()


def build_runtime(settings: Settings, *, clock: Clock = system_clock) -> Runtime:
    """A deployment of one partition as one runtime (the tour, tests, benchmarks); ``close()`` closes it all."""
    fleet = build_runtimes(settings, clock=clock)
    if len(fleet.partitions) > 1:
        fleet.close()
        raise SettingsError(f"[partitioning] partitions = {settings.partitions}: use build_runtimes")
    return fleet.home


def build_runtimes(settings: Settings, *, clock: Clock = system_clock) -> Runtimes:
    """Every partition's runtime over the shared clients and directory, each merchant routed to its own."""
    shared = build_shared(settings, clock)
    try:
        fleet = Runtimes(settings, shared, [], clock=clock)
        where = shared.placements.directory.databases()
        stores = partition_stores(settings, where)
        for number in range(settings.partitions):
            fleet.partitions.append(
                fleet.adopt(_partition_runtime(settings, shared, stores[number], number, clock), where[number][1])
            )
    except BaseException:
        for rt in fleet.partitions:
            rt.close_own()
        shared.close()
        raise
    return fleet


def build_shared(settings: Settings, clock: Clock) -> Shared:
    # against the real WeChat Pay, notify URLs must be https; the sandbox takes http
    real = settings.wechatpay_base_url.rstrip("/") == DEFAULT_WECHATPAY_BASE_URL
    merchants = MerchantBook(
        load_merchants(settings.merchants, settings.config_path, https_only=real),
        load_providers(settings.providers, settings.config_path, https_only=real),
    )
    store = persistence.parse_url(settings.database_url)
    persistence.check_reachable(store)  # one clear line for a mistyped URL, and no SQLite file made by a reader
    directory_db = ViewDatabase(store.in_schema(persistence.DIRECTORY_SCHEMA))
    throttle = SharedThrottle(directory_db)
    client = WechatPayClient(  # each client keeps its API's merchants
        settings.wechatpay_base_url,
        merchants,
        refresh_claim=lambda mchid: throttle.claim(f"platform-certificates:{mchid}", REFRESH_COOLDOWN_SECONDS),
    )
    v2 = WechatPayV2Client(
        settings.wechatpay_base_url,
        merchants,
        secapi_base_url=settings.wechatpay_secapi_base_url,
        ca_file=settings.wechatpay_ca_file,
    )
    metrics.instruments().listen(client.stats, "v3")  # every WeChat call this runtime makes is counted and timed
    metrics.instruments().listen(v2.stats, "v2")
    keys_ledger = open_directory(settings.database_url, clock=clock)
    with_async_store(keys_ledger, store.in_schema(persistence.DIRECTORY_SCHEMA))
    keys = ApiKeys(keys_ledger, persistence.is_unavailable)
    sub_merchants = SubMerchants(keys_ledger, merchants, keys)
    shared = Shared(
        client,
        v2,
        directory_db,
        keys_ledger,
        keys,
        Partitions(Directory(directory_db), clock),
        CashierLinks(settings.cashier_key, clock),
        httpx.Client(timeout=WEBHOOK_TIMEOUT, follow_redirects=False),
        sub_merchants,
    )
    if merchants.providers:  # every sub-merchant known before the first request, then followed each second
        merchants.follow = sub_merchants.follow
        sub_merchants.follow()
        shared.stop_watching = watch_sub_merchants(sub_merchants)
    return shared


def with_async_store(ledger: Ledger, store: persistence.StoreUrl) -> None:
    """On PostgreSQL a worker's hot path reads and saves from its event loop (opened there on first use)."""
    if store.kind == "postgres":
        ledger.async_store = AsyncEventStore(store, cast(LedgerPostgresRecorder, ledger.recorder), ledger.mapper)


def _partition_runtime(
    settings: Settings, shared: Shared, store: persistence.StoreUrl, number: int, clock: Clock
) -> Runtime:
    # many partitions: each one's pool opens connections on first use and keeps none idle (docs/scale-out.md)
    pool_size = persistence.POOL_SIZE if settings.partitions == 1 else 0
    ledger = open_store(store, clock=clock, pool_size=pool_size, reachable=True)  # build_shared checked it
    with_async_store(ledger, store)
    rooms = Rooms.over(ledger)
    db = ViewDatabase(store)
    box = data_keys(settings)
    views = build_views(ledger, db, number)
    service = PaymentService(rooms, shared.client, shared.v2)
    refunding = RefundService(service, rooms.refunds, rooms.reviews)
    payers = Payers(service, settings.wechat_api_base_url, settings.wechat_open_base_url, SessionKeys(db, box))
    finance = Finance(
        rooms.bills, refunding, views.reconciliation, views.journal, views.followers["journal"], archive=BillArchive(db)
    )
    callbacks = Callbacks(service, refunding, rooms.audit, shared.client.keys, RefusalCounter(shared.directory_db))
    return Runtime(
        settings,
        ledger,
        rooms,
        shared.client,
        service,
        refunding,
        payers,
        callbacks,
        finance,
        db,
        views.orders,
        views.journal,
        views.reconciliation,
        views.followers,
        Leases(db),
        shared.v2,
        Products(rooms.catalogue, service, callbacks),
        views.events,
        Webhooks(WebhookStore(db, box), views.events, clock, settings.webhooks_time_factor, shared.webhooks_http),
        shared.cashier,
        number,
    )
