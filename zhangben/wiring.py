"""Everything a process needs, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from adapters import persistence
from adapters.wechatpay.client import WechatPayClient
from adapters.wechatpay.config import load_merchants
from projections.core import Follower
from projections.journal import Journal
from projections.order_status import OrderStatusView
from projections.reconciliation import Reconciliation
from projections.viewdb import ViewDatabase
from zhangben.clock import Clock, system_clock
from zhangben.ledger import Ledger, open_ledger
from zhangben.payments import PaymentService
from zhangben.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    ledger: Ledger
    client: WechatPayClient
    service: PaymentService
    db: ViewDatabase
    orders: OrderStatusView
    journal: Journal
    reconciliation: Reconciliation
    followers: dict[str, Follower]

    def close(self) -> None:
        self.client.close_http()
        self.db.close()
        self.ledger.close()


def _views(ledger: Ledger, db: ViewDatabase) -> tuple[OrderStatusView, Journal, Reconciliation, dict[str, Follower]]:
    orders, journal, reconciliation = OrderStatusView(ledger, db), Journal(ledger, db), Reconciliation(db)
    followers = {p.name: Follower(ledger, db, p) for p in (orders, journal)}
    return orders, journal, reconciliation, followers


def init_database(settings: Settings) -> None:
    """``zhangben db init``: the event store's tables and the views', once."""
    ledger = open_ledger(settings.database_url, create_tables=True)
    db = ViewDatabase(persistence.parse_url(settings.database_url))
    try:
        _, _, reconciliation, followers = _views(ledger, db)
        for follower in followers.values():
            follower.create_tables()
        reconciliation.create_tables()
        from scheduler.leases import Leases

        Leases(db).create_tables()
    finally:
        db.close()
        ledger.close()


def build_runtime(settings: Settings, *, clock: Clock = system_clock) -> Runtime:
    merchants = load_merchants(settings.merchants, settings.config_path)
    ledger = open_ledger(settings.database_url, clock=clock)
    client = WechatPayClient(settings.wechatpay_base_url, merchants)
    db = ViewDatabase(persistence.parse_url(settings.database_url))
    orders, journal, reconciliation, followers = _views(ledger, db)
    return Runtime(settings, ledger, client, PaymentService(ledger, client), db, orders, journal, reconciliation,
                   followers)
