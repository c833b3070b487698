"""Runs each job when it is due, once per due time across every scheduler process.

APScheduler only ticks; what is due, and who runs it, is decided by the
lease rows in the database (``adapters.leases``), so several ``serve``
processes on one PostgreSQL never run a job twice at once.  A job that fails
is recorded and retried at its next due time; the others carry on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from adapters.leases import Leases
from adapters.persistence import is_unavailable
from application.ledger import Clock
from bootstrap.wiring import Runtime
from scheduler import bills, certificates, compensating, expiry, refunds

log = logging.getLogger("zhangben.scheduler")


@dataclass(frozen=True)
class Job:
    name: str
    every: timedelta
    run: Callable[[Runtime, Leases, datetime], dict[str, int]]


# Each job takes the few parts it uses; only this table knows the runtime they come from.
JOBS = (
    Job(
        "compensating_query",
        timedelta(seconds=30),
        lambda rt, leases, now: compensating.run(rt.service, rt.orders, leases, now),
    ),
    Job("expiry", timedelta(seconds=30), lambda rt, leases, now: expiry.run(rt.service, rt.orders, leases, now)),
    Job(
        "refund_follow_up",
        timedelta(seconds=60),
        lambda rt, leases, now: refunds.run(rt.refunding, rt.orders, leases, now),
    ),
    Job(
        "daily_bill",
        timedelta(minutes=10),
        lambda rt, leases, now: bills.run(rt.finance, rt.reconciliation, leases, now, rt.merchants()),
    ),
    Job("certificates", timedelta(hours=12), lambda rt, leases, now: certificates.run(rt.client, leases, now)),
)
# a partition after the first: the same jobs over its own merchants; WeChat's certificates are the process's
PARTITION_JOBS = tuple(job for job in JOBS if job.name != "certificates")


def jobs_of(runtime: Runtime) -> tuple[Job, ...]:
    """The jobs a partition's scheduler runs."""
    return JOBS if runtime.number == 0 else PARTITION_JOBS


class Scheduler:
    def __init__(self, runtime: Runtime, clock: Clock, jobs: tuple[Job, ...] | None = None) -> None:
        self.rt = runtime
        self.clock = clock
        self.jobs = jobs_of(runtime) if jobs is None else jobs
        self.leases = runtime.leases
        self._ticker: BackgroundScheduler | None = None

    def create_tables(self) -> None:
        self.leases.create_tables()
        self.register_jobs()

    def register_jobs(self) -> None:
        """Add this scheduler's jobs to the lease table (no DDL: safe from many processes at once)."""
        now = self.clock()
        for job in self.jobs:
            self.leases.register(job.name, now)

    def run_due(self) -> dict[str, dict[str, int] | str]:
        """Run every job that is due now and not held elsewhere; returns what each did."""
        results: dict[str, dict[str, int] | str] = {}
        for job in self.jobs:
            now = self.clock()
            if not self.leases.take(job.name, now):
                continue
            started = time.perf_counter()
            error = None
            try:
                self.rt.followers["order_status"].bring_up_to_date()  # work from a current view
                results[job.name] = job.run(self.rt, self.leases, now)
            except Exception as exc:  # noqa: BLE001 — one failing job must not stop the others
                error = f"{type(exc).__name__}: {exc}"[:500]
                results[job.name] = f"failed: {error}"
                log.warning("job %s failed: %s", job.name, error)
            finally:
                self.leases.finish(
                    job.name, self.clock(), now + job.every, error, int((time.perf_counter() - started) * 1000)
                )
        return results

    def start(self, tick_seconds: float = 5.0) -> None:
        self._ticker = BackgroundScheduler(daemon=True)
        self._ticker.add_job(
            self._tick, "interval", seconds=tick_seconds, max_instances=1, coalesce=True, next_run_time=datetime.now()
        )
        self._ticker.start()

    def _tick(self) -> None:
        try:
            for name, result in self.run_due().items():
                # a run that found nothing to do is routine: DEBUG, so an idle ledger's log stays quiet
                idle = isinstance(result, dict) and not any(result.values())
                log.log(logging.DEBUG if idle else logging.INFO, "job %s: %s", name, result)
        except Exception as exc:  # the ticker itself must survive a database blip
            if is_unavailable(exc):
                log.warning("scheduler: database unavailable; the due jobs run at the next tick")
            else:
                log.exception("scheduler tick failed")

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.shutdown(wait=False)
