"""Certificates: the platform's (certificate mode) refreshed every 12 hours, one expiring within 7 days warned
about; the merchant's own API certificate (``cert_file``) warned about 30 days before it expires."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from adapters.leases import Leases
from adapters.wechatpay.client import WechatPayClient
from adapters.wechatpay.errors import WechatPayError

log = logging.getLogger("zhangben.scheduler")
WARN_BEFORE = timedelta(days=7)


API_CERT_WARN_BEFORE = timedelta(days=30)


def run(client: WechatPayClient, leases: Leases, now: datetime) -> dict[str, int]:
    refreshed = expiring = 0
    # one merchant per account that signs: a provider's sub-merchants share its certificate and WeChat's keys
    for mchid in client.keys.accounts().values():
        merchant = client.merchants[mchid]
        last = merchant.last_api_certificate  # a renewed one beside it ends the warnings about the old
        if last is not None and last.not_after is not None and last.not_after - now < API_CERT_WARN_BEFORE:
            expiring += 1
            log.warning(
                "the API certificate %s of merchant %s expires at %s: renew it in 商户平台 (API安全) and add the "
                'new one as [[merchants.api_certificates]] (docs/wechatpay.md, "Renewing the API certificate")',
                last.serial_no,
                mchid,
                last.not_after.isoformat(),
            )
        if merchant.platform_public_key is not None:
            continue  # public-key mode: nothing to download, the key does not expire
        try:
            certificates = client.keys[mchid].refresh()
        except WechatPayError as exc:
            log.warning("platform certificates for %s could not be refreshed: %s", mchid, exc)
            raise
        refreshed += len(certificates)
        for cert in certificates:
            if cert.expire_time - now < WARN_BEFORE:
                expiring += 1
                log.warning(
                    "platform certificate %s of %s expires at %s: WeChat should have issued a new one",
                    cert.serial_no,
                    mchid,
                    cert.expire_time.isoformat(),
                )
    return {"refreshed": refreshed, "expiring": expiring}
