"""This process's Prometheus instruments, and one ``/metrics`` answer for all the processes of a deployment.

``zhangben serve --workers N`` is N + 1 processes (the workers, and the parent
that runs the projections, the jobs and the webhooks); a scrape reaches one
worker.  So counters are kept in prometheus_client's multiprocess mode
(https://prometheus.github.io/client_python/multiprocess/): each process
writes its values to files in one directory and a scrape sums them.  ``serve``
and ``work`` turn it on (``share_across_processes``) before anything counts.

What seed 000 asks to watch: WeChat calls by endpoint and answer code (so the
failure rate of unifiedorder and refund is a query), their latency, callbacks
by result, and HTTP requests.  Orders created and paid, and the order → paid
latency, come from the database at scrape time (``api/ops.py``): durable
totals, the same whichever process answers.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
    values,
)
from prometheus_client.registry import Collector

from adapters.wechatpay.retries import CallStats

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
WECHAT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class Instruments:
    """The counters and histograms a process updates (never registered in the library's global registry)."""

    def __init__(self) -> None:
        self.requests = Counter("zhangben_http_requests", "HTTP requests", ["method", "route", "status"], registry=None)
        self.latency = Histogram(
            "zhangben_http_request_seconds", "HTTP request latency", ["route"], registry=None, buckets=HTTP_BUCKETS
        )
        self.callbacks = Counter("zhangben_callbacks", "WeChat callbacks by result", ["result"], registry=None)
        self.shed = Counter(
            "zhangben_requests_shed",
            "Requests answered 503 at once because the worker was at capacity (api/admission.py), by route and lane",
            ["route", "lane"],
            registry=None,
        )
        self.wechat_calls = Counter(
            "zhangben_wechatpay_calls",
            "WeChat Pay call attempts by API version, endpoint (prepay, query, close, refund, refund_query, bill, "
            "certificates) and answer code (WeChat's error code, or the HTTP status of a success)",
            ["api", "endpoint", "code"],
            registry=None,
        )
        self.wechat_seconds = Histogram(
            "zhangben_wechatpay_call_seconds",
            "WeChat Pay call attempt latency by API version and endpoint",
            ["api", "endpoint"],
            registry=None,
            buckets=WECHAT_BUCKETS,
        )

    def collectors(self) -> Iterable[Collector]:
        return (self.requests, self.latency, self.callbacks, self.shed, self.wechat_calls, self.wechat_seconds)

    def listen(self, stats: CallStats, api: str) -> None:
        """Count every attempt a WeChat client makes (each runtime's clients call this once)."""

        def observe(endpoint: str, code: str, seconds: float) -> None:
            self.wechat_calls.labels(api, endpoint, code).inc()
            self.wechat_seconds.labels(api, endpoint).observe(seconds)

        stats.listeners.append(observe)


_lock = threading.Lock()
_instruments: Instruments | None = None


def instruments() -> Instruments:
    """This process's instruments, made on first use (after ``share_across_processes``, when that is called)."""
    global _instruments
    with _lock:
        if _instruments is None:
            _instruments = Instruments()
        return _instruments


def share_across_processes(directory: Path) -> None:
    """Keep this process's (and its children's) values in ``directory``, emptied first: a scrape sums them all.

    Called before any instrument is made; the children (uvicorn's workers)
    inherit the setting through the environment.
    """
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call] # the library reads the setting once, at import


def serve_on(host: str, port: int) -> None:
    """``/metrics`` of a process without HTTP of its own (``zhangben work``), on a thread of prometheus_client's."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in instruments().collectors():
        registry.register(collector)
    start_http_server(port, addr=host, registry=registry)


def exposition(*extra: Collector) -> bytes:
    """The text a scrape gets: this deployment's instruments (summed over its processes) and ``extra``."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for collector in instruments().collectors():
            registry.register(collector)
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)
