"""A service provider's sub-merchants: added, changed, listed and deactivated while the ledger runs.

The provider's own keys are configured once (``[[providers]]`` in zhangben.toml); each sub-merchant is a
``SubMerchant`` record in the directory (``domain.submerchant``), made into a merchant the clients serve by the
``MerchantBook``.  Every process reads the records' new events each second (``follow``), so a sub-merchant added
through one worker is served by every worker of every process within seconds, without a restart.  A deactivated
sub-merchant's new orders are refused (``PaymentService.create_order``); its callbacks, refunds and bills go on,
since money already taken must still be accounted for.
"""

from __future__ import annotations

import builtins  # the class below has a method named `list`
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from adapters.recorders import notifications_once
from adapters.wechatpay.config import CHANNELS, ORDER_TTL_MINUTES, checkout_settings
from adapters.wechatpay.errors import MerchantConfigError
from adapters.wechatpay.merchant_book import MerchantBook
from application.apikeys import ApiKeys
from application.ledger import Ledger, retry_on_conflict
from domain.errors import Conflict, InvalidInput, NotFound
from domain.submerchant import SETTINGS, SubMerchant

TOPICS = (SubMerchant.Created.TOPIC, SubMerchant.Changed.TOPIC)
PAGE = 1000
# a commit with a lower id may land after one with a higher (PostgreSQL hands out ids before commit): each poll
# reads again this far behind the last id read, and a record read twice changes nothing
LOOK_BACK = 100
MCHID = re.compile(r"[0-9]{8,12}")  # WeChat's merchant ids are digits (1900000109)
APPID = re.compile(r"wx[0-9a-f]{16}")  # WeChat appids: wx and 16 hex digits
DEFAULTS: dict[str, Any] = {
    "apps": [],
    "order_ttl_minutes": ORDER_TTL_MINUTES,
    "qr_ttl_minutes": None,
    "return_url_hosts": [],
    "notify_url": None,
    "active": True,
}


def _apps(value: Any) -> list[dict[str, Any]]:
    """``apps``: each ``{"appid", "channels"}``; a channel claimed by two apps is refused (which pays would be a
    guess), as in ``[[merchants.apps]]``."""
    if not isinstance(value, list):
        raise InvalidInput("apps", 'apps is a list of {"appid": "wx…", "channels": ["jsapi", …]}')
    apps: list[dict[str, Any]] = []
    claimed: dict[str, str] = {}
    for n, app in enumerate(value):
        if not isinstance(app, Mapping) or not isinstance(app.get("appid"), str) or not APPID.fullmatch(app["appid"]):
            raise InvalidInput(f"apps[{n}].appid", "an appid is wx followed by 16 hex digits")
        channels = app.get("channels", [])
        if not isinstance(channels, list) or not all(c in CHANNELS for c in channels):
            raise InvalidInput(f"apps[{n}].channels", f"channels are some of {', '.join(CHANNELS)}")
        for channel in channels:
            if channel in claimed:
                raise InvalidInput(f"apps[{n}].channels", f"channel {channel} is claimed by {claimed[channel]} too")
            claimed[channel] = app["appid"]
        apps.append({"appid": app["appid"], "channels": list(channels)})
    return apps


def checked_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a request names, each checked: a wrong one is an ``InvalidInput`` naming it."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise InvalidInput(sorted(unknown)[0], f"not a sub-merchant setting; settings are {', '.join(SETTINGS)}")
    out = dict(settings)
    if "name" in out and (not isinstance(out["name"], str) or not 1 <= len(out["name"].strip()) <= 64):
        raise InvalidInput("name", "name is 1-64 characters")
    if "apps" in out:
        out["apps"] = _apps(out["apps"])
    if "active" in out and not isinstance(out["active"], bool):
        raise InvalidInput("active", "active is true or false")
    if out.get("notify_url") is not None and not str(out["notify_url"]).startswith(("https://", "http://")):
        raise InvalidInput("notify_url", "notify_url is the ledger's notify URL for this sub-merchant (https)")
    try:
        checked = checkout_settings(out, "sub-merchant")
    except MerchantConfigError as exc:
        field = next(f for f in ("order_ttl_minutes", "qr_ttl_minutes", "return_url_hosts") if f"`{f}`" in str(exc))
        raise InvalidInput(field, str(exc).removeprefix("sub-merchant: ")) from None
    for name in ("order_ttl_minutes", "qr_ttl_minutes"):
        if name in out:
            out[name] = checked[name]
    if "return_url_hosts" in out:
        out["return_url_hosts"] = list(checked["return_url_hosts"])
    return out


class SubMerchants:
    """The commands on a provider's sub-merchants, over the directory's store, and the follower that keeps this
    process's ``MerchantBook`` current."""

    def __init__(self, directory: Ledger, book: MerchantBook, keys: ApiKeys) -> None:
        self.directory = directory
        self.book = book
        self.keys = keys
        self.position = 0  # the directory's last notification read
        self._records: dict[UUID, SubMerchant] = {}  # every record, as folded from its events
        self._following = threading.Lock()

    # -- commands ----------------------------------------------------------------------------

    @retry_on_conflict
    def add(self, provider: str, sub_mchid: str, settings: Mapping[str, Any], by: str) -> tuple[SubMerchant, bool]:
        """A new sub-merchant (True), or the same request again (False); other settings for a known one: 409."""
        if not isinstance(sub_mchid, str) or not MCHID.fullmatch(sub_mchid):
            raise InvalidInput("sub_mchid", "sub_mchid is WeChat's 8-12 digit merchant id of the sub-merchant")
        if provider not in self.book.providers:
            raise NotFound(f"service provider {provider} is not configured ([[providers]] in zhangben.toml)")
        if sub_mchid in self.book.configured:
            raise Conflict(f"merchant {sub_mchid} is configured in zhangben.toml: change it there")
        full = {**DEFAULTS, "name": sub_mchid, **checked_settings(settings)}
        self.book.sub_merchant(provider, {"sub_mchid": sub_mchid, **full})  # a merchant can be made of it
        existing: SubMerchant | None = self.directory.find(SubMerchant.create_id(sub_mchid))
        if existing is not None:
            if existing.provider != provider:
                raise Conflict(f"sub-merchant {sub_mchid} belongs to another service provider")
            if existing.settings != full:
                raise Conflict(f"sub-merchant {sub_mchid} exists with other settings: PATCH it to change them")
            return existing, False
        record = SubMerchant(provider=provider, sub_mchid=sub_mchid, settings=full, by=by, at=self.directory.clock())
        self.directory.save(record)
        self.follow()
        return record, True

    @retry_on_conflict
    def change(self, provider: str, sub_mchid: str, changes: Mapping[str, Any], by: str) -> SubMerchant:
        """Change some settings (``active: false`` deactivates); a change to nothing records nothing."""
        record = self.get(provider, sub_mchid)
        checked = checked_settings(changes)
        self.book.sub_merchant(provider, {**record.state(), **checked})
        if record.change(checked, by, self.directory.clock()):
            self.directory.save(record)
            self.follow()
        return record

    def issue_key(self, provider: str, sub_mchid: str) -> str:
        """A new API key (role ``merchant``) for the sub-merchant's own systems: shown once."""
        self.get(provider, sub_mchid)
        return self.keys.issue_api_key(sub_mchid, "merchant")

    # -- reads -------------------------------------------------------------------------------

    def get(self, provider: str, sub_mchid: str) -> SubMerchant:
        """The provider's sub-merchant; another provider's is not found, as if it did not exist."""
        record: SubMerchant | None = self.directory.find(SubMerchant.create_id(sub_mchid))
        if record is None or record.provider != provider:
            raise NotFound(f"sub-merchant {sub_mchid} not found")
        return record

    def list(self, provider: str | None = None) -> list[SubMerchant]:
        """Every sub-merchant (of ``provider``), in the order they were added."""
        return [r for r in self.directory.created(SubMerchant.Created.TOPIC) if provider in (None, r.provider)]

    def history(self, sub_mchid: str) -> Sequence[Any]:
        """The record's events: who added it, who changed what, when."""
        return self.directory.events_of(SubMerchant.create_id(sub_mchid))

    # -- following ---------------------------------------------------------------------------

    def follow(self) -> int:
        """Read the records changed since the last call into the book; how many changed.  Each page of events is
        one query, folded into the records held here (``_fold``): 5,000 sub-merchants are five queries at start."""
        with self._following:
            changed, start = 0, max(0, self.position - LOOK_BACK) + 1
            while page := notifications_once(self.directory.recorder, start, PAGE, TOPICS):
                touched = self._fold(page)
                records = [self._records[i] for i in touched]
                changed += len(self.book.replace_sub_merchants((r.provider, r.state()) for r in records))
                self.position = max(self.position, page[-1].id)
                start = page[-1].id + 1
                if len(page) < PAGE:
                    break
            return changed

    def _fold(self, page: Sequence[Any]) -> Sequence[UUID]:
        """Apply each event to the record it belongs to; an event read again (the look-back) changes nothing, and a
        record whose events are not all here (one committed out of order) is read whole from the store."""
        touched: dict[UUID, None] = {}
        missing: builtins.list[UUID] = []
        for notification in page:
            event: Any = self.directory.mapper.to_domain_event(notification)  # a SubMerchant event: it mutates
            known = self._records.get(event.originator_id)
            version = known.version if known is not None else 0
            if event.originator_version <= version:
                continue
            if event.originator_version != version + 1:
                missing.append(event.originator_id)
                continue
            self._records[event.originator_id] = event.mutate(known)
            touched[event.originator_id] = None
        if missing:
            self._records |= self.directory.load_many(missing)
            touched |= dict.fromkeys(missing)
        return tuple(touched)
