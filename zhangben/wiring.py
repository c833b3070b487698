"""Everything a process needs, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from adapters import persistence
from adapters.wechatpay.client import WechatPayClient
from adapters.wechatpay.config import load_merchants
from projections.order_status import OrderStatusView
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
    orders: OrderStatusView

    def close(self) -> None:
        self.client.close_http()
        self.orders.db.close()
        self.ledger.close()


def init_database(settings: Settings) -> None:
    """``zhangben db init``: the event store's tables and the views', once."""
    ledger = open_ledger(settings.database_url, create_tables=True)
    try:
        OrderStatusView(ledger, ViewDatabase(persistence.parse_url(settings.database_url))).create_tables()
    finally:
        ledger.close()


def build_runtime(settings: Settings, *, clock: Clock = system_clock) -> Runtime:
    merchants = load_merchants(settings.merchants, settings.config_path)
    ledger = open_ledger(settings.database_url, clock=clock)
    client = WechatPayClient(settings.wechatpay_base_url, merchants)
    orders = OrderStatusView(ledger, ViewDatabase(persistence.parse_url(settings.database_url)))
    return Runtime(settings, ledger, client, PaymentService(ledger, client), orders)
