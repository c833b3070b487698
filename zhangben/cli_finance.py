"""``zhangben reconcile``, ``zhangben export``, ``zhangben projections``: the finance and operations commands."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from adapters.exports import FORMATS, render, write_export
from adapters.wechatpay.bills import BillFormatError
from adapters.wechatpay.errors import WechatPayBusinessError
from api import logs
from application.finance_exports import export_workbook
from bootstrap.settings import Settings, load_settings
from bootstrap.wiring import RoutedBooks, Runtime, build_runtimes
from projections.core import Runner
from zhangben import terminal
from zhangben.usage import UsageError


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


def command_runtime() -> Runtime:
    """The runtime for one command: the first partition's, with every partition's behind it (``rt.fleet``).

    No command but ``db init`` (and ``serve``) runs DDL: a read command never
    creates a database, and many workers may start at once (``tuple concurrently updated``).
    """
    return build_runtimes(load_settings()).home


def cmd_reconcile(args: argparse.Namespace) -> int:
    bill_date = _date(args.date, "--date")
    content = _readable(args.bill, "--bill")
    fund_flow = _readable(getattr(args, "fund_flow_bill", None), "--fund-flow-bill")
    rt = command_runtime()
    differences = 0
    try:
        merchants = chosen_merchants(rt.settings, args.merchant)
        if content is not None and len(merchants) > 1:
            raise UsageError("--bill is one merchant's file: pass --merchant MCHID too")
        for mchid in merchants:
            try:
                with terminal.progress(f"merchant {mchid}'s {bill_date} bill: lines") as advance:
                    report = rt.fleet.at(mchid).finance.import_bill(mchid, bill_date, content, advance)
            except WechatPayBusinessError as exc:
                if not exc.is_code("NO_STATEMENT_EXIST"):
                    raise
                print(
                    f"{bill_date} merchant {mchid}: no bill from WeChat (no trades that day, or not ready before 10:00)"
                )
                if content is None or fund_flow is not None:  # the balance may have moved all the same
                    differences += _reconcile_fund_flow(rt.fleet.at(mchid), mchid, bill_date, fund_flow)
                continue
            except BillFormatError as exc:  # BillMismatch too: a damaged file
                raise UsageError(f"the bill cannot be read: {exc}") from None
            differences += report["differences_total"]
            _print_report(bill_date, mchid, report)
            if content is None or fund_flow is not None:
                differences += _reconcile_fund_flow(rt.fleet.at(mchid), mchid, bill_date, fund_flow)
    finally:
        rt.close()
    return 0 if not differences else 3


def _reconcile_fund_flow(rt: Runtime, mchid: str, bill_date: date, content: Path | None) -> int:
    """The day's fund flow bill (资金账单) beside the trade bill: its differences with the journal's WeChat balance."""
    if rt.service.merchant(mchid).is_partner:
        return 0  # a sub-merchant's balance is its own: its fund flow bill is not the service provider's to read
    try:
        report = rt.finance.import_fund_flow(mchid, bill_date, content)
    except WechatPayBusinessError as exc:
        if not exc.is_code("NO_STATEMENT_EXIST"):
            raise
        print("  fund flow: no bill from WeChat (no movement that day, or not ready before 10:00)")
        return 0
    except BillFormatError as exc:
        raise UsageError(f"the fund flow bill cannot be read: {exc}") from None
    wechat = report["wechat"]
    print(
        f"  fund flow: {report['lines']} movements, closing balance {wechat['closing_fen']} fen, "
        f"differences {len(report['differences'])}"
    )
    for difference in report["differences"]:
        print(
            f"    {difference['kind']}: WeChat {difference['wechat_fen']} fen, ledger {difference['journal_fen']} fen "
            f"({difference['title']})"
        )
    return len(report["differences"])


def _readable(name: str | None, option: str) -> Path | None:
    """A file given on the command line, readable now (a clear message, not an error halfway through the import)."""
    if not name:
        return None
    try:
        path = Path(name)
        path.open("rb").close()
    except OSError as exc:
        raise UsageError(f"{option} {name}: {exc.strerror}") from None
    return path


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
    if day_to < day_from:
        raise UsageError(f"--to {day_to} is before --date {day_from}")
    out = Path(args.out)
    fmt = export_format(out, args.format)
    rt = command_runtime()
    try:
        mchids = chosen_merchants(rt.settings, args.merchant)
        if args.what == "orders":
            for number in sorted({rt.fleet.at(m).number for m in mchids}):  # no runner here: the views as of now
                rt.fleet.partitions[number].followers["order_status"].catch_up()
        books = RoutedBooks(rt.fleet)  # each merchant's rows from its own partition, in one file
        book = export_workbook(args.what, books, books.orders_on, mchids, day_from, day_to)
        with terminal.progress(f"{args.what} export: rows") as advance:
            tally = terminal.Tally(advance)
            for sheet in book.sheets:
                sheet.rows = tally.through(sheet.rows)
            write_export(out, render(book, fmt))
    finally:
        rt.close()
    sheets = book.sheets if fmt == "xlsx" else [book.sheets[book.csv_sheet]]
    counted = ", ".join(f"{s.name} {s.totals['count']} rows" for s in sheets if s.totals and "count" in s.totals)
    print(f"wrote {out} ({fmt}: {', '.join(s.name for s in sheets)}" + (f"; {counted}" if counted else "") + ")")
    return 0


def export_format(out: Path, given: str | None) -> str:
    """The format asked for, or the file's extension's; a format that contradicts the extension is refused."""
    suffix = out.suffix.lower().lstrip(".")
    if given is None:
        if suffix not in FORMATS:
            raise UsageError(f"cannot tell the format of {out}: name it .csv or .xlsx, or give --format")
        return suffix
    if suffix in FORMATS and suffix != given:
        raise UsageError(f"--format {given} contradicts the file name {out} (.{suffix})")
    return given


def cmd_projections_status(args: argparse.Namespace) -> int:
    home = command_runtime()
    try:
        several = len(home.fleet.partitions) > 1
        for rt in home.fleet.partitions:
            head = rt.followers["order_status"].log.head()
            print(f"partition {rt.number}: event log head {head}" if several else f"event log head: {head}")
            rows = []
            for name, follower in rt.followers.items():
                position = follower.position
                lag = follower.lag_seconds(datetime.now(UTC)) if position < head else 0.0
                rows.append((name, position, head - position, f"{lag:.1f}" if lag else "0"))
            numbers = ("position", "lag (events)", "lag (seconds)")
            terminal.table(("projection", *numbers), rows, right=numbers)
    finally:
        home.close()
    return 0


def cmd_projections_rebuild(args: argparse.Namespace) -> int:
    home = command_runtime()
    try:
        for rt in home.fleet.partitions:
            _rebuild(rt, args.name, f"partition {rt.number}: " if len(home.fleet.partitions) > 1 else "")
    finally:
        home.close()
    return 0


def _rebuild(rt: Runtime, only: str | None, where: str) -> None:
    """One partition's projections (or the one named) replayed from its log."""
    head = rt.followers["order_status"].log.head()
    for name in [only] if only else [*rt.followers, "reconciliation"]:
        start = time.perf_counter()
        if name == "reconciliation":  # after the journal: its ledger_money is what the bills are compared with
            with terminal.progress("rebuilding reconciliation: days") as advance:
                done = rt.finance.rebuild_reconciliation(advance)
            print(f"{where}reconciliation: {len(done['rebuilt'])} day(s) from their kept bill files")
            if done["not_kept"]:
                print(f"  left as they were (no file kept): {', '.join(done['not_kept'])}")
            continue
        with terminal.progress(f"rebuilding {name}: events", total=head) as advance:
            count = rt.followers[name].rebuild(advance)
        elapsed = time.perf_counter() - start
        rate = count / elapsed if elapsed else 0
        print(f"{where}{name}: replayed {count} events in {elapsed:.1f}s ({rate:,.0f} events/s)")


def cmd_projections_run(args: argparse.Namespace) -> int:
    """A projection in its own process (scale-out); run ``serve --no-projections`` beside it."""
    logs.configure()  # JSON lines, as every long-running process
    home = command_runtime()  # several runners may start at once: DDL is `zhangben db init`'s
    runners = [Runner([rt.followers[args.name]]) for rt in home.fleet.partitions]  # a thread per partition
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for rt, runner in zip(home.fleet.partitions, runners, strict=True):
        print(
            f"projection {args.name} following the log of partition {rt.number} from {rt.followers[args.name].position}"
        )
        runner.start()
    sys.stdout.flush()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for runner in runners:
            runner.stop()
        home.close()
    return 0
