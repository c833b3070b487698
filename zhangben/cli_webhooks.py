"""``zhangben webhooks …``: the delivery worker alone, and the merchants' endpoints (docs/webhooks.md)."""

from __future__ import annotations

import argparse
import signal
import threading
import time

from api import logs
from application.webhooks import DeliveryWorker
from zhangben import terminal
from zhangben.cli_finance import chosen_merchants, command_runtime


def cmd_webhooks_run(args: argparse.Namespace) -> int:
    """Deliver until stopped; with ``--once``, what is due now (after the event feed catches up), then stop.

    Several of these (and ``serve``) may run at once: each delivery is leased
    in the database, so exactly one process sends it at a time.
    """
    logs.configure()  # JSON lines, as every long-running process
    home = command_runtime()  # DDL is `zhangben db init`'s, as for the scheduler
    workers = [(rt, DeliveryWorker(rt.webhooks)) for rt in home.fleet.partitions]  # each partition's deliveries
    try:
        if args.once:
            for rt, worker in workers:
                rt.followers["business_events"].catch_up()
                while worker.tick() or not worker.idle():
                    time.sleep(0.05)
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print("webhook delivery running (Ctrl-C stops it)", flush=True)
        for _, worker in workers:
            worker.start()
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        for _, worker in workers:
            worker.stop()
        home.close()


def cmd_webhooks_create(args: argparse.Namespace) -> int:
    rt = command_runtime()
    try:
        mchid = chosen_merchants(rt.settings, args.merchant)[0]
        types = [t.strip() for t in args.events.split(",") if t.strip()] if args.events else None
        endpoint = rt.fleet.at(mchid).webhooks.create_endpoint(mchid, args.url, types)
        print(f"endpoint {endpoint.id} for {mchid}: {endpoint.url}")
        print(f"events: {', '.join(endpoint.types)}")
        print(f"signing secret (shown once, keep it in the receiver's secret store): {endpoint.secret}")
    finally:
        rt.close()
    return 0


def cmd_webhooks_list(args: argparse.Namespace) -> int:
    rt = command_runtime()
    try:
        mchid = chosen_merchants(rt.settings, args.merchant)[0]
        endpoints = rt.fleet.at(mchid).webhooks.endpoints(mchid)
        if not endpoints:
            print(f"no webhook endpoint for {mchid}")
        else:
            terminal.table(
                ("endpoint", "state", "url", "events"),
                (
                    (
                        e.id,
                        e.state + (f" since {e.failing_since}" if e.failing_since else ""),
                        e.url,
                        ", ".join(e.types),
                    )
                    for e in endpoints
                ),
            )
    finally:
        rt.close()
    return 0


def cmd_webhooks_delete(args: argparse.Namespace) -> int:
    rt = command_runtime()
    try:
        mchid = chosen_merchants(rt.settings, args.merchant)[0]
        rt.fleet.at(mchid).webhooks.delete_endpoint(mchid, args.endpoint_id)
        print(f"endpoint {args.endpoint_id} deleted")
    finally:
        rt.close()
    return 0
