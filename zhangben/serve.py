"""``zhangben serve``: the schema once; the projections, the jobs and the webhook deliveries in this process; N uvicorn workers."""

from __future__ import annotations

import argparse
import os
import socket

import uvicorn
from uvicorn.supervisors import Multiprocess

from adapters.persistence import parse_url
from api import logs
from application.webhooks import DeliveryWorker
from bootstrap.clock import system_clock
from bootstrap.settings import load_settings
from bootstrap.wiring import build_runtime, init_database
from projections.core import Runner
from scheduler.runner import Scheduler
from zhangben.usage import UsageError


def cmd_serve(args: argparse.Namespace) -> int:
    return serve(
        args.host,
        args.port,
        args.workers,
        projections=not args.no_projections,
        scheduler=not args.no_scheduler,
        webhooks=not args.no_webhooks,
    )


def serve(
    host: str, port: int, workers: int, *, projections: bool = True, scheduler: bool = True, webhooks: bool = True
) -> int:
    settings = load_settings()
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    if workers > 1 and parse_url(settings.database_url).kind != "postgres":
        raise UsageError("SQLite serves one worker process; use PostgreSQL for --workers N")
    init_database(settings)  # once, here: workers never run DDL
    runtime = build_runtime(settings)  # also checks every merchant's configuration before serving
    runner = Runner(list(runtime.followers.values())) if projections else None
    if runner:
        runner.start()
    jobs = None
    if scheduler:
        jobs = Scheduler(build_runtime(settings), system_clock)
        jobs.register_jobs()  # the tables were made by init_database above
        jobs.start()
    delivery = None
    if webhooks:  # on its own connections and threads: a slow endpoint never holds a request
        hooks_rt = build_runtime(settings)
        delivery = DeliveryWorker(hooks_rt.webhooks)
        delivery.start()
    os.environ["ZHANGBEN_PROJECTIONS_RUNNING"] = "1" if projections else "0"
    logs.configure()
    print(
        f"zhangben ledger on http://{host}:{port} (API docs: http://{host}:{port}/docs, {workers} worker(s))",
        flush=True,
    )
    try:
        run_workers(host, port, workers)
    finally:
        if delivery:
            delivery.stop()
            hooks_rt.close()
        if jobs:
            jobs.stop()
            jobs.rt.close()
        if runner:
            runner.stop()
        runtime.close()
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


def run_workers(host: str, port: int, workers: int) -> None:
    config = uvicorn.Config(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        log_config=None,
        # the peer stays the peer: only `trusted_proxies` decide whose X-Forwarded-For is read (api/client_ip.py);
        # uvicorn's own default would believe any local process
        proxy_headers=False,
    )
    sock = listening_socket(host, port)
    if workers == 1:
        uvicorn.Server(config).run(sockets=[sock])
    else:
        Multiprocess(config, sockets=[sock]).run()
