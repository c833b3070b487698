"""``zhangben scheduler run`` (the jobs alone) and ``zhangben scheduler status``."""

from __future__ import annotations

import argparse
import signal
import threading

from api import logs
from bootstrap.clock import system_clock
from scheduler.runner import Scheduler
from zhangben import terminal
from zhangben.cli_finance import command_runtime


def cmd_scheduler_status(args: argparse.Namespace) -> int:
    home = command_runtime()
    try:
        several = len(home.fleet.partitions) > 1
        for rt in home.fleet.partitions:
            scheduler = Scheduler(rt, system_clock)
            scheduler.create_tables()
            terminal.table(
                ("job", "last run (UTC)", "result", "next run (UTC)", "runs", "failed", "last error"),
                (
                    (
                        s.name,
                        s.last_finished_at or "-",
                        s.last_status or "-",
                        s.next_run_at,
                        s.runs,
                        s.failures,
                        s.last_error,
                    )
                    for s in scheduler.leases.states()
                ),
                title=f"partition {rt.number}" if several else None,
                right=("runs", "failed"),
            )
    finally:
        home.close()
    return 0


def cmd_scheduler_run(args: argparse.Namespace) -> int:
    logs.configure()  # JSON lines, as every long-running process
    home = command_runtime()  # several schedulers may start at once: DDL is `zhangben db init`'s
    schedulers = [Scheduler(rt, system_clock) for rt in home.fleet.partitions]  # each partition's jobs
    for scheduler in schedulers:
        scheduler.register_jobs()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("scheduler running (Ctrl-C stops it)", flush=True)
    for scheduler in schedulers:
        scheduler.start(tick_seconds=args.tick)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for scheduler in schedulers:
            scheduler.stop()
        home.close()
    return 0
