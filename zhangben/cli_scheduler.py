"""``zhangben scheduler run`` (the jobs alone) and ``zhangben scheduler status``."""

from __future__ import annotations

import argparse
import signal
import threading

from bootstrap.clock import system_clock
from scheduler.runner import Scheduler
from zhangben.cli_finance import command_runtime


def cmd_scheduler_status(args: argparse.Namespace) -> int:
    rt = command_runtime()
    try:
        scheduler = Scheduler(rt, system_clock)
        scheduler.create_tables()
        print(f"{'job':<20} {'last run (UTC)':<28} {'result':<7} {'next run (UTC)':<28} {'runs':>5} {'failed':>6}")
        for s in scheduler.leases.states():
            print(
                f"{s.name:<20} {s.last_finished_at or '-':<28} {s.last_status or '-':<7} {s.next_run_at:<28} "
                f"{s.runs:>5} {s.failures:>6}" + (f"  {s.last_error}" if s.last_error else "")
            )
    finally:
        rt.close()
    return 0


def cmd_scheduler_run(args: argparse.Namespace) -> int:
    rt = command_runtime(create_tables=False)  # several schedulers may start at once: DDL is `zhangben db init`'s
    scheduler = Scheduler(rt, system_clock)
    scheduler.register_jobs()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("scheduler running (Ctrl-C stops it)", flush=True)
    scheduler.start(tick_seconds=args.tick)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.stop()
        rt.close()
    return 0
