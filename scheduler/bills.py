"""The daily bills: from 10:00 Beijing time, yesterday's trade bill for each merchant, reconciled, and beside it
the fund flow bill (资金账单) of each ordinary merchant, compared with the journal's WeChat balance.

A bill WeChat has not made yet (``NO_STATEMENT_EXIST``) is tried again at
the next run, later that day; a day already imported is not imported again
by the job (``zhangben reconcile`` re-imports on request).  Differences are
logged as warnings finance can alert on and counted in
``zhangben_reconciliation_differences`` and ``zhangben_fund_flow_differences``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime, timedelta

from adapters.leases import Leases
from adapters.wechatpay.beijing import BEIJING
from adapters.wechatpay.errors import WechatPayBusinessError
from application.finance import Finance
from projections.reconciliation import Reconciliation

log = logging.getLogger("zhangben.scheduler")
READY_HOUR = 10


def run(
    finance: Finance, bills: Reconciliation, leases: Leases, now: datetime, merchants: Iterable[str]
) -> dict[str, int]:
    """Yesterday's bills of ``merchants`` (a partition's: each partition reconciles its own)."""
    local = now.astimezone(BEIJING)
    if local.hour < READY_HOUR:
        return {"imported": 0, "not_ready": 0, "differences": 0}
    day = local.date() - timedelta(days=1)
    imported = not_ready = differences = 0
    for mchid in merchants:
        if not bills.has_bill(mchid, day):
            try:
                report = finance.import_bill(mchid, day)
            except WechatPayBusinessError as exc:
                if not exc.is_code("NO_STATEMENT_EXIST"):
                    raise
                not_ready += 1
                log.info("bill for %s on %s not available yet: %s", mchid, day, exc)
                # no trades that day (or not made yet): the balance may still have moved (the day before's
                # settlement), so the fund flow bill is still asked for
                differences += _fund_flow(finance, mchid, day)
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
        differences += _fund_flow(finance, mchid, day)
    return {"imported": imported, "not_ready": not_ready, "differences": differences}


def _fund_flow(finance: Finance, mchid: str, day: date) -> int:
    """The day's fund flow bill, once, after its trade bill (whose fee and settlement the journal books)."""
    bill = finance.days.daily_bill(mchid, day)
    if finance.payments.merchant(mchid).is_partner or (bill is not None and bill.fund_flow is not None):
        return 0
    try:
        report = finance.import_fund_flow(mchid, day)
    except WechatPayBusinessError as exc:
        if not exc.is_code("NO_STATEMENT_EXIST"):
            raise
        log.info("fund flow bill for %s on %s not available: %s", mchid, day, exc)
        return 0
    if report["differences"]:
        log.warning(
            "fund flow of %s on %s: %d differences with the journal (%s)",
            mchid,
            day,
            len(report["differences"]),
            ", ".join(f"{d['kind']} {d['difference_fen']} fen" for d in report["differences"]),
        )
    return len(report["differences"])
