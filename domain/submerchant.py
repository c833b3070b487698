"""A service provider's sub-merchant (特约商户), added and changed through the API: its record is its events.

A provider (服务商) onboards a sub-merchant at WeChat (进件), then tells the ledger: its ``sub_mchid``, its apps
(``sub_appid`` and the channels each pays for), its name, its checkout settings.  Each change is an event that
says who made it, when and what it changed, so "who switched this shop off, and when" has an answer years later.
The records live in the directory, beside the API keys (docs/scale-out.md); every process follows them
(``bootstrap.merchant_watch``).  https://pay.weixin.qq.com/doc/v3/partner/4012069852 (the partner model).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.ids import NAMESPACE

# What a sub-merchant's record holds besides its ids: the fields a PATCH may change.
SETTINGS = ("name", "apps", "order_ttl_minutes", "qr_ttl_minutes", "return_url_hosts", "notify_url", "active")


class SubMerchant(Aggregate):
    TOPIC = "zhangben.SubMerchant"

    class Created(Aggregate.Created):
        TOPIC = "zhangben.SubMerchant.Created"
        provider: str
        sub_mchid: str
        settings: dict[str, Any]
        by: str
        at: datetime

    class Changed(Aggregate.Event):
        """Some settings changed: only those, with their new values (``active`` false: deactivated)."""

        TOPIC = "zhangben.SubMerchant.Changed"
        changes: dict[str, Any]
        by: str
        at: datetime

        def apply(self, sub: SubMerchant) -> None:
            sub.settings = {**sub.settings, **self.changes}
            sub.changed_at = self.at

    @staticmethod
    def create_id(sub_mchid: str) -> UUID:
        return uuid5(NAMESPACE, f"submerchant/{sub_mchid}")

    def __init__(self, provider: str, sub_mchid: str, settings: dict[str, Any], by: str, at: datetime) -> None:
        self.provider = provider
        self.sub_mchid = sub_mchid
        self.settings = dict(settings)
        self.created_at = at
        self.changed_at = at

    @property
    def active(self) -> bool:
        return bool(self.settings.get("active", True))

    def state(self) -> dict[str, Any]:
        """The record as the merchant book and the API read it: the ids and every setting."""
        return {"sub_mchid": self.sub_mchid, "provider": self.provider, **self.settings}

    def change(self, changes: dict[str, Any], by: str, at: datetime) -> bool:
        """Record what differs from the current settings; nothing (and False) when nothing does."""
        differing = {k: v for k, v in changes.items() if k in SETTINGS and self.settings.get(k) != v}
        if differing:
            self.trigger_event(self.Changed, changes=differing, by=by, at=at)
        return bool(differing)
