"""Every merchant the ledger serves, by the id its orders are kept under: those of ``zhangben.toml`` and the
sub-merchants a service provider added through the API (``application.submerchants``), which change while the
process runs.

A service provider (服务商) signs every request of its sub-merchants (特约商户) with its own keys, under its own
``sp_mchid``, naming the sub-merchant in ``sub_mchid``
(https://pay.weixin.qq.com/doc/v3/partner/4012069852): so a sub-merchant is the provider's configured merchant
with another ``sub_mchid`` — no key file read, no key parsed, which is why 5,000 of them cost what 5 do.

The book is replaced whole on each change (copy on write): a reader holds one consistent generation, and the
clients, the callbacks and the use cases all read the one book, so a sub-merchant added in one process is
served by every worker of every process within a poll (``bootstrap.merchant_watch``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from adapters.wechatpay.config import App, Merchant, checkout_settings
from adapters.wechatpay.errors import MerchantConfigError

CATCH_UP_SECONDS = 0.25


class MerchantBook(Mapping[str, Merchant]):
    """The merchants of one deployment, fixed ones and a provider's sub-merchants; ``on_api`` views one API's."""

    def __init__(self, configured: Mapping[str, Merchant], providers: Mapping[str, Merchant] | None = None) -> None:
        self.configured = dict(configured)
        self.providers = dict(providers or {})  # sp_mchid → the provider's merchant, sub_mchid left empty
        self._all: dict[str, Merchant] = dict(self.configured)
        self._lock = threading.Lock()
        # reads the records changed since the last poll (``SubMerchants.follow``, set by bootstrap); None: none
        self.follow: Callable[[], object] | None = None
        self._caught_up = 0.0

    def catch_up(self) -> bool:
        """Read the latest records now, at most every ``CATCH_UP_SECONDS``, for an id not (yet) in the book: a
        sub-merchant added through another process a moment ago is served at once, not after the next poll.
        Called from threads only (it reads the directory); True when it read."""
        if self.follow is None or time.monotonic() - self._caught_up < CATCH_UP_SECONDS:
            return False
        self._caught_up = time.monotonic()
        self.follow()
        return True

    def __getitem__(self, mchid: str) -> Merchant:
        return self._all[mchid]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._all))

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, mchid: object) -> bool:
        return mchid in self._all

    def on_api(self, api: str) -> MerchantsOnApi:
        return MerchantsOnApi(self, api)

    def sub_merchant(self, provider: str, state: Mapping[str, Any]) -> Merchant:
        """The merchant a sub-merchant's record (``SubMerchant.settings``) makes of its provider's."""
        template = self.providers.get(provider)
        if template is None:
            raise MerchantConfigError(f"service provider {provider} is not configured ([[providers]])")
        where = f"sub-merchant {state['sub_mchid']}"
        apps = tuple(App(str(a["appid"]), tuple(a.get("channels", ()))) for a in state.get("apps", ()))
        notify_url = state.get("notify_url") or _notify_url(template.notify_url, str(state["sub_mchid"]))
        return dataclasses.replace(
            template,
            name=str(state.get("name") or state["sub_mchid"]),
            sub_mchid=str(state["sub_mchid"]),
            sub_appid=apps[0].appid if apps else "",
            apps=apps,
            notify_url=notify_url,
            refund_notify_url=_refund_notify(template, notify_url),
            active=bool(state.get("active", True)),
            **checkout_settings(state, where),
        )

    def replace_sub_merchants(self, records: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
        """Put these sub-merchants' current records in (provider, record); returns the ids that changed."""
        with self._lock:
            changed, merged = [], dict(self._all)
            for provider, state in records:
                mchid = str(state["sub_mchid"])
                if mchid in self.configured:
                    continue  # a [[merchants]] table wins: its settings are the operator's
                merged[mchid] = self.sub_merchant(provider, state)
                changed.append(mchid)
            self._all = merged
            return changed


class MerchantsOnApi(Mapping[str, Merchant]):
    """The book's merchants on one API (v3 or v2): what each WeChat client and notify route serves."""

    def __init__(self, book: MerchantBook, api: str) -> None:
        self.book, self.api = book, api

    def __getitem__(self, mchid: str) -> Merchant:
        merchant = self.book[mchid]
        if merchant.api != self.api:
            raise KeyError(mchid)
        return merchant

    def __iter__(self) -> Iterator[str]:
        return (mchid for mchid in self.book if self.book[mchid].api == self.api)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, mchid: object) -> bool:
        return isinstance(mchid, str) and mchid in self.book and self.book[mchid].api == self.api


def _notify_url(provider_url: str, sub_mchid: str) -> str:
    """The provider's notify path with the sub-merchant's id after it (``…/notify/{sub_mchid}``): a refusal there is
    the sub-merchant's, and only its keys are tried (docs/wechatpay.md)."""
    return f"{provider_url.rstrip('/')}/{sub_mchid}"


def _refund_notify(template: Merchant, notify_url: str) -> str:
    if not template.is_v2:
        return ""
    head, marker, tail = notify_url.rpartition("/wechatpay/v2/notify")
    return f"{head}/wechatpay/v2/refund-notify{tail}" if marker else notify_url
