"""The daily bill: from 10:00 Beijing time, yesterday's trade bill for each merchant, reconciled.

A bill WeChat has not made yet (``NO_STATEMENT_EXIST``) is tried again at
the next run, later that day; a day already imported is not imported again
by the job (``zhangben reconcile`` re-imports on request).  Differences are
logged as warnings finance can alert on and counted in
``zhangben_reconciliation_differences``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from adapters.leases import Leases
from adapters.wechatpay.beijing import BEIJING
from adapters.wechatpay.errors import WechatPayBusinessError
from bootstrap.wiring import Runtime

log = logging.getLogger("zhangben.scheduler")
READY_HOUR = 10


def run(rt: Runtime, leases: Leases, now: datetime) -> dict[str, int]:
    local = now.astimezone(BEIJING)
    if local.hour < READY_HOUR:
        return {"imported": 0, "not_ready": 0, "differences": 0}
    day = local.date() - timedelta(days=1)
    imported = not_ready = differences = 0
    for mchid in rt.service.merchants:
        if rt.reconciliation.has_bill(mchid, day):
            continue
        try:
            report = rt.finance.import_bill(mchid, day)
        except WechatPayBusinessError as exc:
            if not exc.is_code("NO_STATEMENT_EXIST"):
                raise
            not_ready += 1
            log.info("bill for %s on %s not available yet: %s", mchid, day, exc)
            continue
        imported += 1
        differences += report["differences_total"]
        if report["differences_total"]:
            log.warning(
                "reconciliation of %s on %s: %d differences (%s)",
                mchid,
                day,
                report["differences_total"],
                report["counts"],
            )
    return {"imported": imported, "not_ready": not_ready, "differences": differences}
