"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from adapters.metrics import exposition, instruments
from adapters.persistence import is_unavailable
from api.deps import runtime
from bootstrap.wiring import Runtime
from domain.status import RefundStatus

router = APIRouter(include_in_schema=False)
MAX_READY_LAG_EVENTS = 1000


PAID_BOUNDS_MS = (5_000, 15_000, 30_000, 60_000, 120_000, 300_000, 900_000, 1_800_000, 7_200_000)


class Metrics:
    """The handle the app's code counts through: this process's instruments, and what the database says."""

    def __init__(self, rt: Runtime) -> None:
        tools = instruments()
        self.requests = tools.requests
        self.latency = tools.latency
        self.callbacks = tools.callbacks
        self.shed = tools.shed
        self.ledger = _LedgerCollector(rt)

    def render(self) -> bytes:
        return exposition(self.ledger)


class _LedgerCollector(Collector):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    @property
    def parts(self) -> list[Runtime]:
        """Every partition's runtime: the figures are the deployment's, summed."""
        return self.rt.fleet.partitions

    def collect(self) -> Iterator[Any]:
        yield from self._orders()
        orders = GaugeMetricFamily("zhangben_orders", "Orders by status (status view)", labels=["status"])
        lag = GaugeMetricFamily("zhangben_projection_lag_events", "Events not yet in the view", labels=["projection"])
        try:  # summed over the partitions; a projection's lag is its most behind partition's
            statuses: Counter[str] = Counter()
            lags: dict[str, int] = {}
            for rt in self.parts:
                statuses.update(rt.orders.counts_by_status())
                for name, follower in rt.followers.items():
                    lags[name] = max(lags.get(name, 0), follower.lag())
            for status, count in sorted(statuses.items()):
                orders.add_metric([status], count)
            for name, behind in lags.items():
                lag.add_metric([name], behind)
        except Exception:  # noqa: BLE001, S110 — a scrape must not fail because the database blinked
            pass
        yield orders
        yield lag
        yield from self._scheduler()
        yield from self._money_alerts()
        yield from self._webhooks()

    def _orders(self) -> Iterator[Any]:
        """Created and paid as durable totals (rate() gives the success rate over time) and order → paid latency."""
        created = CounterMetricFamily("zhangben_orders_created", "Orders created (from the order view)")
        paid = CounterMetricFamily("zhangben_orders_paid", "Orders paid, at any time after creation (order view)")
        latency = HistogramMetricFamily(
            "zhangben_order_paid_seconds", "From an order's creation to WeChat's success_time, for paid orders"
        )
        try:
            figures = [rt.orders.paid_latency(PAID_BOUNDS_MS) for rt in self.parts]
        except Exception:  # noqa: BLE001 — a scrape must not fail because the database blinked
            return
        total, paid_total = sum(f[0] for f in figures), sum(f[1] for f in figures)
        sum_ms = sum(f[3] for f in figures)
        within = [sum(counts) for counts in zip(*(f[2] for f in figures), strict=True)]
        created.add_metric([], total)
        paid.add_metric([], paid_total)
        buckets = [(f"{b / 1000:g}", count) for b, count in zip(PAID_BOUNDS_MS, within, strict=True)]
        latency.add_metric([], [*buckets, ("+Inf", paid_total)], sum_ms / 1000)
        yield from (created, paid, latency)

    def _scheduler(self) -> Iterator[Any]:
        runs = CounterMetricFamily("zhangben_job_runs", "Scheduled job runs", labels=["job"])
        failures = CounterMetricFamily("zhangben_job_failures", "Scheduled job failures", labels=["job"])
        duration = GaugeMetricFamily("zhangben_job_last_duration_seconds", "Last run's duration", labels=["job"])
        try:  # each partition runs its own jobs: runs and failures summed, the longest last run
            states = [state for rt in self.parts for state in rt.leases.states()]
            for name in dict.fromkeys(state.name for state in states):
                mine = [state for state in states if state.name == name]
                runs.add_metric([name], sum(state.runs for state in mine))
                failures.add_metric([name], sum(state.failures for state in mine))
                duration.add_metric([name], max((state.last_duration_ms or 0) for state in mine) / 1000)
        except Exception:  # noqa: BLE001, S110 — no scheduler tables yet: no job metrics
            pass
        yield from (runs, failures, duration)

    def _money_alerts(self) -> Iterator[Any]:
        differences = GaugeMetricFamily(
            "zhangben_reconciliation_differences",
            "Differences in each merchant's latest reconciled day",
            labels=["mchid", "date"],
        )
        matched = GaugeMetricFamily(
            "zhangben_reconciliation_matched",
            "Bill lines matched in each merchant's latest reconciled day",
            labels=["mchid", "date"],
        )
        abnormal = GaugeMetricFamily("zhangben_refunds_abnormal", "Refunds ABNORMAL at WeChat, waiting for a person")
        fund_flow = GaugeMetricFamily(
            "zhangben_fund_flow_differences",
            "Differences between each merchant's latest fund flow bill (资金账单) and the journal's WeChat balance",
            labels=["mchid", "date"],
        )
        reviews = CounterMetricFamily(
            "zhangben_reviews",
            "Orders sent to a person's review (kind: needs_review, every one; duplicate, money taken twice)",
            labels=["kind"],
        )
        try:
            counts: Counter[str] = Counter()
            for rt in self.parts:
                counts.update(rt.events.counts(("order.needs_review", "payment.duplicate")))
            reviews.add_metric(["needs_review"], counts.get("order.needs_review", 0))
            reviews.add_metric(["duplicate"], counts.get("payment.duplicate", 0))
        except Exception:  # noqa: BLE001, S110 — a scrape must not fail because the database blinked
            pass
        yield reviews
        try:  # a merchant's figures are in its own partition
            for rt in self.parts:
                for mchid, day, matched_lines, count in rt.reconciliation.latest_results():
                    differences.add_metric([mchid, day], count)
                    matched.add_metric([mchid, day], matched_lines)
                for mchid, day, count in rt.reconciliation.latest_fund_flow_results():
                    fund_flow.add_metric([mchid, day], count)
            abnormal.add_metric(
                [],
                sum(
                    1
                    for rt in self.parts
                    for o in rt.orders.orders_with_open_refunds()
                    for r in o["refunds"]
                    if r["status"] == RefundStatus.ABNORMAL
                ),
            )
        except Exception:  # noqa: BLE001, S110 — a scrape must not fail because the database blinked
            pass
        yield from (differences, matched, abnormal, fund_flow)

    def _webhooks(self) -> Iterator[Any]:
        deliveries = GaugeMetricFamily(
            "zhangben_webhook_deliveries", "Webhook deliveries by state (pending, delivered, failed)", labels=["state"]
        )
        failing = GaugeMetricFamily(
            "zhangben_webhook_endpoints_failing", "Webhook endpoints that gave up after a day of retries (alert on > 0)"
        )
        try:
            deliveries_by: Counter[str] = Counter()
            for rt in self.parts:
                deliveries_by.update(rt.webhooks.store.counts())
            counts = deliveries_by
            for state in ("pending", "delivered", "failed"):
                deliveries.add_metric([state], counts.get(state, 0))
            failing.add_metric([], counts.get("endpoints_failing", 0))
        except Exception:  # noqa: BLE001, S110 — a scrape must not fail because the database blinked
            pass
        yield from (deliveries, failing)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    rt = runtime(request)
    gate = getattr(request.app.state, "db_gate", None)
    if gate is not None and not gate.is_open:
        return JSONResponse({"status": "unavailable", "database": "unreachable; probing"}, status_code=503)
    try:
        rt.ledger.recorder.max_notification_id()  # the database answers
        lags: dict[str, int] = {}  # each projection's most behind partition
        for part in rt.fleet.partitions:
            for name, follower in part.followers.items():
                lags[name] = max(lags.get(name, 0), follower.lag())
    except Exception as exc:  # noqa: BLE001 — not ready, and say why
        if is_unavailable(exc) and gate is not None:
            gate.suspect(str(exc))
        return JSONResponse({"status": "unavailable", "database": str(exc)[:200]}, status_code=503)
    ready = max(lags.values(), default=0) <= MAX_READY_LAG_EVENTS
    return JSONResponse(
        {"status": "ready" if ready else "lagging", "projection_lag_events": lags}, status_code=200 if ready else 503
    )


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
