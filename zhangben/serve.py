"""``zhangben serve`` and ``zhangben work``: the HTTP workers, and the work beside them.

``serve`` makes the schema once, then runs N uvicorn workers and — unless
told otherwise — the projections, the jobs and the webhook deliveries in the
same process.  In production these split (docs/going-live.md): ``serve
--api-only`` answers requests, ``zhangben work`` runs the rest in a process of
its own, so a restart of one never stops the other.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess

from adapters import metrics
from adapters.follower_leases import FollowerLeases
from adapters.persistence import parse_url
from api import logs
from application.webhooks import DeliveryWorker
from bootstrap.clock import system_clock
from bootstrap.placement_watch import watch_moves
from bootstrap.settings import Settings, load_settings
from bootstrap.wiring import Runtime, Runtimes, build_runtimes, init_database
from projections.core import Runner
from projections.sharing import SharedFollowing
from scheduler.runner import Scheduler
from zhangben.usage import UsageError

log = logging.getLogger("zhangben.serve")
GRACEFUL_SHUTDOWN_SECONDS = 5


def cmd_serve(args: argparse.Namespace) -> int:
    alone = args.api_only
    return serve(
        args.host,
        args.port,
        args.workers,
        projections=not (args.no_projections or alone),
        scheduler=not (args.no_scheduler or alone),
        webhooks=not (args.no_webhooks or alone),
        projections_elsewhere=alone,
    )


def cmd_work(args: argparse.Namespace) -> int:
    """``zhangben work``: the projections, the jobs and the webhook deliveries, without HTTP (beside ``serve --api-only``)."""
    settings = load_settings()
    logs.configure()
    if args.metrics_port:
        metrics.serve_on(args.metrics_host, args.metrics_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with background(settings, projections=True, scheduler=True, webhooks=True):
        log.info("working: projections, scheduled jobs and webhook deliveries (SIGTERM or Ctrl-C stops)")
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


@contextmanager
def background(settings: Settings, *, projections: bool, scheduler: bool, webhooks: bool) -> Iterator[None]:
    """The work that is not answering requests, each on its own runtime (connections and threads), stopped in order.

    Each runtime follows ``zhangben partitions move`` (``watch_moves``): a
    partition reopened on another cell has its projections, jobs and
    deliveries started again there.
    """
    stack = ExitStack()
    with stack:
        # each partition's log is followed, and its jobs and deliveries run, on their own threads
        if projections:  # the partitions' projections, shared with the other processes that run them
            fleet = stack.enter_context(closing(build_runtimes(settings)))
            following = SharedFollowing(
                FollowerLeases(fleet.shared.directory_db),
                lambda partition: Runner(list(fleet.partitions[partition].followers.values())),
                len(fleet.partitions),
                paused=lambda partition: partition in fleet.frozen,
            )
            fleet.moved.append(lambda partition, old: following.restart(partition))
            following.start()
            stack.callback(following.stop)
            stack.callback(watch_moves(fleet))
        if scheduler:
            each_partition(stack, build_runtimes(settings), _start_jobs)
        if webhooks:  # on its own connections and threads: a slow endpoint never holds a request
            each_partition(stack, build_runtimes(settings), _start_deliveries)
        yield


def each_partition(stack: ExitStack, fleet: Runtimes, start: Callable[[Runtime], Callable[[], None]]) -> None:
    """``start`` run on every partition's runtime (it returns how to stop what it started), and again on a
    partition's new runtime after a move; all stopped with ``stack``."""
    stack.enter_context(closing(fleet))
    stops = {rt.number: start(rt) for rt in fleet.partitions}

    def moved(partition: int, old: Runtime) -> None:
        stops.pop(partition)()
        stops[partition] = start(fleet.partitions[partition])

    fleet.moved.append(moved)
    stack.callback(lambda: [stop() for stop in list(stops.values())])
    stack.callback(watch_moves(fleet))


def _start_jobs(rt: Runtime) -> Callable[[], None]:
    jobs = Scheduler(rt, system_clock)
    jobs.register_jobs()  # the tables were made by `db init` (or serve's init_database)
    jobs.start()
    return jobs.stop


def _start_deliveries(rt: Runtime) -> Callable[[], None]:
    delivery = DeliveryWorker(rt.webhooks)
    delivery.start()
    return delivery.stop


def serve(
    host: str,
    port: int,
    workers: int,
    *,
    projections: bool = True,
    scheduler: bool = True,
    webhooks: bool = True,
    projections_elsewhere: bool = False,
) -> int:
    settings = load_settings()
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    if workers > 1 and parse_url(settings.database_url).kind != "postgres":
        raise UsageError("SQLite serves one worker process; use PostgreSQL for --workers N")
    sock = listening_socket(host, port)  # first: a port in use is one line, before anything starts
    # one /metrics for this process and its workers, whichever worker a scrape reaches
    metrics_dir = Path(os.environ.get(metrics.MULTIPROC_ENV) or tempfile.mkdtemp(prefix="zhangben-metrics-"))
    metrics.share_across_processes(metrics_dir)
    init_database(settings)  # once, here: workers never run DDL
    build_runtimes(settings).close()  # checks every merchant's configuration before serving
    # read-after-write: the API waits for the projections wherever they run (`zhangben work` with --api-only)
    os.environ["ZHANGBEN_PROJECTIONS_RUNNING"] = "1" if projections or projections_elsewhere else "0"
    logs.configure()
    with background(settings, projections=projections, scheduler=scheduler, webhooks=webhooks):
        log.info(
            "zhangben ledger on http://%s:%d (API docs: http://%s:%d/docs, %d worker(s))",
            host,
            port,
            host,
            port,
            workers,
        )
        print(
            f"zhangben ledger on http://{host}:{port} (API docs: http://{host}:{port}/docs, {workers} worker(s))",
            flush=True,
        )
        try:
            run_workers(sock, host, port, workers)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def listening_socket(host: str, port: int) -> socket.socket:
    """The shared listening socket, created with ``IPPROTO_TCP``.

    uvicorn binds it with protocol 0, and asyncio sets ``TCP_NODELAY`` only on
    sockets whose protocol is TCP; workers that inherit uvicorn's socket then
    answer every response after Nagle's algorithm meets the client's delayed
    ACK — measured: 44 ms added to every request with ``--workers 2``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_workers(sock: socket.socket, host: str, port: int, workers: int) -> None:
    config = uvicorn.Config(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        log_config=None,
        # SIGTERM: requests in flight get this long to finish; live streams (SSE, long-polls) never do on their own
        # and are cut, their clients reconnect (a deploy or `docker stop` is not held up for minutes)
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # the peer stays the peer: only `trusted_proxies` decide whose X-Forwarded-For is read (api/client_ip.py);
        # uvicorn's own default would believe any local process
        proxy_headers=False,
    )
    if workers == 1:
        uvicorn.Server(config).run(sockets=[sock])
    else:
        Multiprocess(config, sockets=[sock]).run()
