"""``zhangben reconcile``, ``zhangben export``, ``zhangben projections``: the finance and operations commands."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

from adapters.exports import export, write_export
from adapters.wechatpay.beijing import BEIJING
from adapters.wechatpay.bills import BillFormatError
from adapters.wechatpay.errors import WechatPayBusinessError
from application.finance import JOURNAL_COLUMNS, RECONCILIATION_COLUMNS
from bootstrap.settings import Settings, load_settings
from bootstrap.wiring import Runtime, build_runtime, init_database
from projections.core import Runner
from zhangben.usage import UsageError


class Progress:
    """A one-line progress counter on standard error (long work shows progress)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.shown = False

    def __call__(self, count: int) -> None:
        if sys.stderr.isatty() or count % 50000 == 0 or not self.shown:
            print(f"\r{self.label}: {count:,}", end="", file=sys.stderr, flush=True)
            self.shown = True

    def done(self) -> None:
        if self.shown:
            print(file=sys.stderr)


def _date(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a date (YYYY-MM-DD)") from None


def chosen_merchants(settings: Settings, explicit: str | None) -> list[str]:
    """The merchant named, or every merchant configured (v3 and v2 alike)."""
    known = settings.merchant_ids()
    if explicit:
        if known and explicit not in known:
            raise UsageError(f"merchant {explicit} is not configured in {settings.config_path}")
        return [explicit]
    if not known:
        raise UsageError(f"no merchant in {settings.config_path}: pass --merchant MCHID")
    return known


def command_runtime(*, create_tables: bool = True) -> Runtime:
    """The runtime for one command; long-running workers pass ``create_tables=False`` (no DDL, ever)."""
    settings = load_settings()
    if create_tables:
        init_database(settings)
    return build_runtime(settings)


def cmd_reconcile(args: argparse.Namespace) -> int:
    bill_date = _date(args.date, "--date")
    content = None
    if args.bill:
        try:
            content = Path(args.bill)
            content.open("rb").close()  # readable now, with a clear message, not halfway through the import
        except OSError as exc:
            raise UsageError(f"--bill {args.bill}: {exc.strerror}") from None
    rt = command_runtime()
    differences = 0
    try:
        merchants = chosen_merchants(rt.settings, args.merchant)
        if content is not None and len(merchants) > 1:
            raise UsageError("--bill is one merchant's file: pass --merchant MCHID too")
        for mchid in merchants:
            progress = Progress(f"importing merchant {mchid}'s {bill_date} bill")
            try:
                report = rt.finance.import_bill(mchid, bill_date, content, progress)
            except WechatPayBusinessError as exc:
                if not exc.is_code("NO_STATEMENT_EXIST"):
                    raise
                progress.done()
                print(
                    f"{bill_date} merchant {mchid}: no bill from WeChat (no trades that day, or not ready before 10:00)"
                )
                continue
            except BillFormatError as exc:  # BillMismatch too: a damaged file
                raise UsageError(f"the bill cannot be read: {exc}") from None
            progress.done()
            differences += report["differences_total"]
            _print_report(bill_date, mchid, report)
    finally:
        rt.close()
    return 0 if not differences else 3


def _print_report(bill_date: date, mchid: str, report: dict[str, Any]) -> None:
    imported = report["imported"]
    print(
        f"{bill_date} merchant {mchid}: {imported['lines']} bill lines, settled {imported['settled_fen']} fen, "
        f"refunded {imported['refunded_fen']} fen, fee {imported['fee_fen']} fen"
    )
    print(
        f"  matched {report['matched']}, differences {report['differences_total']}"
        + (f", healed by query: {', '.join(report['healed'])}" if report["healed"] else "")
    )
    if report["differences_total"] > len(report["differences"]):
        print(
            f"  (the first {len(report['differences'])} of {report['differences_total']}; "
            "`zhangben export reconciliation` writes every one)"
        )
    for difference in report["differences"]:
        print(
            f"  {difference['kind']:<18} {difference['of']:<8} out_trade_no={difference['out_trade_no']} "
            f"transaction_id={difference['transaction_id'] or '-'} out_refund_no={difference['out_refund_no'] or '-'} "
            f"bill={difference['bill_fen']} ledger={difference['ledger_fen']}"
        )


def cmd_export(args: argparse.Namespace) -> int:
    day_from = _date(args.date, "--date")
    day_to = _date(args.to, "--to") if args.to else day_from
    rt = command_runtime()
    rows: list[dict[str, Any]] = []
    try:
        finance = rt.finance
        for mchid in chosen_merchants(rt.settings, args.merchant):
            if args.what == "reconciliation":
                day = day_from
                while day <= day_to:
                    report = finance.report(mchid, day)
                    if report["bill_imported"]:  # without WeChat's bill there is nothing to compare
                        rows += [d | {"mchid": mchid, "date": day.isoformat()} for d in finance.differences(mchid, day)]
                    day += timedelta(days=1)
                columns = ["mchid", "date", *RECONCILIATION_COLUMNS]
            elif args.what == "journal":
                rows += [line | {"mchid": mchid} for line in finance.journal_report(mchid, day_from, day_to)["lines"]]
                columns = ["mchid", *JOURNAL_COLUMNS]
            else:
                rows += _orders(rt, mchid, day_from, day_to)
                columns = [
                    "mchid",
                    "merchant_order_no",
                    "status",
                    "amount_fen",
                    "paid_fen",
                    "payer_total_fen",
                    "refunded_fen",
                    "created_at",
                    "paid_at",
                ]
        write_export(Path(args.out), export(args.what, args.format, columns, rows))
    finally:
        rt.close()
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


def _orders(rt: Runtime, mchid: str, day_from: date, day_to: date) -> list[dict[str, Any]]:
    rt.followers["order_status"].catch_up()
    start = datetime.combine(day_from, dtime.min, BEIJING)
    end = datetime.combine(day_to + timedelta(days=1), dtime.min, BEIJING)
    rows, cursor = [], None
    while True:
        page, cursor = rt.orders.list(mchid, None, start, end, 100, cursor)
        rows += page
        if cursor is None:
            return rows


def cmd_projections_status(args: argparse.Namespace) -> int:
    rt = command_runtime()
    try:
        head = rt.followers["order_status"].log.head()
        print(f"event log head: {head}")
        print(f"{'projection':<14} {'position':>10} {'lag (events)':>13} {'lag (seconds)':>14}")
        for name, follower in rt.followers.items():
            position = follower.position
            lag = follower.lag_seconds(datetime.now(UTC)) if position < head else 0.0
            seconds = f"{lag:.1f}" if lag else "0"
            print(f"{name:<14} {position:>10} {head - position:>13} {seconds:>14}")
    finally:
        rt.close()
    return 0


def cmd_projections_rebuild(args: argparse.Namespace) -> int:
    rt = command_runtime()
    try:
        for name in [args.name] if args.name else list(rt.followers):
            progress = Progress(f"rebuilding {name}")
            start = time.perf_counter()
            count = rt.followers[name].rebuild(progress)
            progress.done()
            elapsed = time.perf_counter() - start
            rate = count / elapsed if elapsed else 0
            print(f"{name}: replayed {count} events in {elapsed:.1f}s ({rate:,.0f} events/s)")
    finally:
        rt.close()
    return 0


def cmd_projections_run(args: argparse.Namespace) -> int:
    """A projection in its own process (scale-out); run ``serve --no-projections`` beside it."""
    rt = command_runtime(create_tables=False)  # several runners may start at once: DDL is `zhangben db init`'s
    runner = Runner([rt.followers[args.name]])
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    print(f"projection {args.name} following the log from position {rt.followers[args.name].position}", flush=True)
    try:
        runner.run()
    except KeyboardInterrupt:
        pass
    finally:
        rt.close()
    return 0
