"""Everything a process needs, built once from the settings: the composition root.

The one module that knows every inner layer: it opens the ledger on the
configured database, builds the WeChat Pay client from the merchants'
settings, hands the ledger's event log to the projections, and hands the
read models to the use cases that read them.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from typing import cast

from adapters import metrics, persistence, schemas
from adapters.async_store import AsyncEventStore
from adapters.bill_archive import BillArchive
from adapters.directory import Directory
from adapters.leases import Leases
from adapters.recorders import LedgerPostgresRecorder
from adapters.refusals import RefusalCounter
from adapters.secretbox import DataKeys
from adapters.sessions import SessionKeys
from adapters.throttles import SharedThrottle
from adapters.viewdb import ViewDatabase
from adapters.webhooks import WebhookStore
from adapters.wechatpay.client import WechatPayClient
from adapters.wechatpay.config import load_merchants
from adapters.wechatpay.platform import REFRESH_COOLDOWN_SECONDS
from adapters.wechatpay.v2_client import WechatPayV2Client
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
from application.webhooks import Webhooks
from bootstrap.clock import system_clock
from bootstrap.ledger import open_ledger, open_store
from bootstrap.settings import DEFAULT_WECHATPAY_BASE_URL, Settings, SettingsError
from projections.business_events import BusinessEvents
from projections.core import EventLog, Follower
from projections.journal import Journal
from projections.order_status import OrderStatusView
from projections.reconciliation import Reconciliation


@dataclass
class Views:
    """The read models and the followers that keep them up to date."""

    orders: OrderStatusView
    journal: Journal
    reconciliation: Reconciliation
    events: BusinessEvents
    followers: dict[str, Follower]


@dataclass
class Runtime:
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

    def close(self) -> None:
        self.webhooks.http.close()
        self.client.close_http()
        self.v2.close_http()
        self.db.close()
        self.ledger.close()


def event_log(ledger: Ledger) -> EventLog:
    """The ledger's log as the projections read it."""
    return EventLog(ledger.recorder, ledger.mapper, ledger.repository)


def build_views(ledger: Ledger, db: ViewDatabase) -> Views:
    log, reads = event_log(ledger), OrderReads(ledger)
    orders, journal = OrderStatusView(log, db, reads.views_of_many), Journal(log, db)
    events = BusinessEvents(log, db, reads.views_at_many)
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
            settings.partitions, {p: persistence.partition_schema(p) for p in range(settings.partitions)}
        )
    for partition in range(settings.partitions):
        init_partition(settings, store.in_schema(persistence.partition_schema(partition)))
    with closing(ViewDatabase(directory_store)) as db:
        Partitions(Directory(db), clock).place_configured(settings.merchant_ids())


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
        RefusalCounter(db).create_tables()
        SharedThrottle(db).create_tables()
        # secrets kept in clear before sealing existed (or under a rotated-out key) are sealed now
        webhooks.reseal()
        sessions.reseal()
    finally:
        db.close()
        ledger.close()


def build_runtime(settings: Settings, *, clock: Clock = system_clock) -> Runtime:
    if settings.partitions > 1:  # routing each merchant to its partition's store is the next step of issue 26
        raise SettingsError(
            f"[partitioning] partitions = {settings.partitions}: this release serves one partition; "
            "`db init` and `zhangben partitions` already work with more"
        )
    # against the real WeChat Pay, notify URLs must be https; the sandbox takes http
    real = settings.wechatpay_base_url.rstrip("/") == DEFAULT_WECHATPAY_BASE_URL
    merchants = load_merchants(settings.merchants, settings.config_path, https_only=real)
    ledger = open_ledger(settings.database_url, clock=clock)
    store = persistence.parse_url(settings.database_url)
    if store.kind == "postgres":  # a worker's callbacks record from its event loop (opened there on first use)
        ledger.async_store = AsyncEventStore(store, cast(LedgerPostgresRecorder, ledger.recorder), ledger.mapper)
    rooms = Rooms.over(ledger)
    db = ViewDatabase(persistence.parse_url(settings.database_url))
    box = data_keys(settings)
    throttle = SharedThrottle(db)
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
    views = build_views(ledger, db)
    service = PaymentService(rooms, client, v2)
    refunding = RefundService(service, rooms.refunds, rooms.reviews)
    payers = Payers(service, settings.wechat_api_base_url, settings.wechat_open_base_url, SessionKeys(db, box))
    finance = Finance(
        rooms.bills, refunding, views.reconciliation, views.journal, views.followers["journal"], archive=BillArchive(db)
    )
    callbacks = Callbacks(service, refunding, rooms.audit, client.keys, RefusalCounter(db))
    return Runtime(
        settings,
        ledger,
        rooms,
        client,
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
        v2,
        Products(rooms.catalogue, service, callbacks),
        views.events,
        Webhooks(WebhookStore(db, box), views.events, clock, settings.webhooks_time_factor),
        CashierLinks(settings.cashier_key, clock),
    )
