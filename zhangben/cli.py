"""The ``zhangben`` command.

Every user mistake ends in one line on standard error and a non-zero exit;
tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import uvicorn

from adapters.persistence import PersistenceError, redact
from adapters.wechatpay.beijing import BEIJING
from adapters.wechatpay.errors import MerchantConfigError, WechatPayError
from application.history import HistoryEvent
from application.ledger import Ledger
from application.views import OrderView
from bootstrap.settings import Settings, SettingsError, load_settings
from bootstrap.wiring import init_database, open_ledger
from domain.apikey import ROLES
from domain.errors import LedgerError, OrderNotFound
from sandbox.app import Sandbox, build_app
from sandbox.config import SandboxConfigError, load_sandbox_config
from sandbox.keyset import init_keyset
from zhangben import cli_finance, cli_scheduler, demo
from zhangben.serve import serve
from zhangben.usage import UsageError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (UsageError, SettingsError, PersistenceError, LedgerError, MerchantConfigError, WechatPayError) as exc:
        print(f"zhangben: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zhangben",
        description="zhangben (账本): an event-sourced payment ledger for WeChat Pay.",
        epilog="Settings: ZHANGBEN_CONFIG (default ./zhangben.toml), ZHANGBEN_DATABASE_URL "
        "(default sqlite:///var/zhangben.db).",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    db = commands.add_parser("db", help="the event store's tables")
    db_commands = db.add_subparsers(title="db commands", metavar="COMMAND")
    db_init = db_commands.add_parser("init", help="create the event store tables once, before workers start")
    db_init.set_defaults(handler=cmd_db_init)

    history = commands.add_parser("history", help="an order's full event history and its state")
    history.add_argument("merchant_order_no", metavar="MERCHANT_ORDER_NO")
    history.add_argument("--merchant", metavar="MCHID", help="the merchant (mchid, or sub_mchid of a sub-merchant)")
    history.add_argument(
        "--as-of",
        metavar="ISO8601",
        help="show the history up to, and the state at, this moment (no offset = Beijing time)",
    )
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    history.set_defaults(handler=cmd_history)

    keys = commands.add_parser("keys", help="development keys")
    keys_commands = keys.add_subparsers(title="keys commands", metavar="COMMAND")
    keys_init = keys_commands.add_parser("init", help="write a development keyset and a matching zhangben.toml")
    keys_init.add_argument("--dir", default="var/keys", help="where the key files go (default var/keys)")
    keys_init.add_argument(
        "--config", default=None, help="the config file to write (default $ZHANGBEN_CONFIG or zhangben.toml)"
    )
    keys_init.add_argument("--ledger-url", default="http://127.0.0.1:8000", help="base of the notify_urls")
    keys_init.add_argument("--sandbox-url", default="http://127.0.0.1:8900", help="the WeChat Pay base URL to use")
    keys_init.set_defaults(handler=cmd_keys_init)

    tour = commands.add_parser("demo", help="the end-to-end tour: every step printed, exit 0 if all held")
    tour.set_defaults(handler=lambda args: demo.main())

    serve = commands.add_parser("serve", help="run the ledger's HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (PostgreSQL only for more than 1)")
    serve.add_argument("--no-projections", action="store_true", help="do not run the projections in this process")
    serve.add_argument("--no-scheduler", action="store_true", help="do not run the scheduled jobs in this process")
    serve.set_defaults(handler=cmd_serve)

    apikey = commands.add_parser("apikey", help="API keys")
    apikey_commands = apikey.add_subparsers(title="apikey commands", metavar="COMMAND")
    apikey_create = apikey_commands.add_parser("create", help="print a new API key once (only its hash is stored)")
    apikey_create.add_argument("--merchant", required=True, metavar="MCHID")
    apikey_create.add_argument("--role", required=True, choices=ROLES)
    apikey_create.set_defaults(handler=cmd_apikey_create)

    cli_finance.add_commands(commands)
    cli_scheduler.add_commands(commands)

    sandbox = commands.add_parser("sandbox", help="run the local WeChat Pay sandbox")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8900)
    sandbox.set_defaults(handler=cmd_sandbox)
    return parser


def _config_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("ZHANGBEN_CONFIG", "zhangben.toml"))


def cmd_keys_init(args: argparse.Namespace) -> int:
    for line in init_keyset(
        Path(args.dir), _config_path(args.config), args.ledger_url.rstrip("/"), args.sandbox_url.rstrip("/")
    ):
        print(line)
    return 0


def cmd_apikey_create(args: argparse.Namespace) -> int:
    settings = load_settings()
    known = settings.merchant_ids()
    if known and args.merchant not in known:
        raise UsageError(f"merchant {args.merchant} is not in {settings.config_path} (known: {', '.join(known)})")
    ledger = open_ledger(settings.database_url)
    try:
        key = ledger.issue_api_key(args.merchant, args.role)
    finally:
        ledger.close()
    print(key)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    return serve(
        args.host, args.port, args.workers, projections=not args.no_projections, scheduler=not args.no_scheduler
    )


def cmd_sandbox(args: argparse.Namespace) -> int:
    try:
        config = load_sandbox_config(_config_path())
    except SandboxConfigError as exc:
        raise UsageError(str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(
        f"WeChat Pay sandbox on http://{args.host}:{args.port} (mode {config.mode}, "
        f"{len(config.merchants)} merchants, state in {config.database})",
        flush=True,
    )
    uvicorn.run(build_app(Sandbox(config)), host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_db_init(args: argparse.Namespace) -> int:
    settings = load_settings()
    init_database(settings)
    print(f"event store ready: {redact(settings.database_url)}")
    return 0


def parse_moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--as-of {text!r} is not an ISO 8601 date-time (e.g. 2026-11-22T10:00:00+08:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=BEIJING)


def cmd_history(args: argparse.Namespace) -> int:
    settings = load_settings()
    as_of = parse_moment(args.as_of) if args.as_of else None
    ledger = open_ledger(settings.database_url)
    try:
        mchid = _find_merchant(ledger, settings, args.merchant, args.merchant_order_no)
        events = ledger.order_history(mchid, args.merchant_order_no, as_of)
        if as_of is None:
            state = ledger.order_view(mchid, args.merchant_order_no)
        else:
            state = ledger.order_state_as_of(mchid, args.merchant_order_no, as_of)
    finally:
        ledger.close()
    if args.json:
        payload = {
            "merchant": mchid,
            "merchant_order_no": args.merchant_order_no,
            "as_of": as_of.isoformat() if as_of else None,
            "events": [e.as_json() for e in events],
            "state": state,
        }
        print(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        print(format_history(mchid, args.merchant_order_no, as_of, events, state))
    return 0


def _find_merchant(ledger: Ledger, settings: Settings, merchant: str | None, order_no: str) -> str:
    """The merchant named, or the one configured merchant that has this order."""
    if merchant:
        return merchant
    candidates = settings.merchant_ids()
    if not candidates:
        raise UsageError("no merchant configured: pass --merchant MCHID")
    found = []
    for mchid in candidates:
        try:
            ledger.get_order(mchid, order_no)
        except OrderNotFound:
            continue
        found.append(mchid)
    if not found:
        raise OrderNotFound(", ".join(candidates), order_no)
    if len(found) > 1:
        raise UsageError(f"order {order_no!r} exists for merchants {', '.join(found)}: pass --merchant")
    return found[0]


_SUMMARY_FIELDS = (
    "amount_fen",
    "total_fen",
    "channel",
    "out_trade_no",
    "transaction_id",
    "out_refund_no",
    "reason",
    "event_type",
    "notification_id",
    "trade_state",
    "refund_id",
    "expected_fen",
)


def _summary(event: HistoryEvent) -> str:
    parts = [f"{k}={event.data[k]}" for k in _SUMMARY_FIELDS if event.data.get(k) not in (None, "")]
    return " ".join(parts)


def format_history(
    mchid: str, order_no: str, as_of: datetime | None, events: list[HistoryEvent], state: OrderView
) -> str:
    when = f"as of {as_of.isoformat()}" if as_of else "now"
    lines = [f"order {order_no} (merchant {mchid}), {len(events)} events, {when}", ""]
    lines.append(f"{'time (UTC)':<27} {'aggregate':<9} {'v':>3}  {'event':<16} details")
    for event in events:
        stamp = event.timestamp.astimezone().strftime("%Y-%m-%dT%H:%M:%S.%f")[:23]
        lines.append(f"{stamp:<27} {event.aggregate:<9} {event.version:>3}  {event.type:<16} {_summary(event)}")
    lines += [
        "",
        f"status {state['status']}  amount {state['amount_fen']} fen  paid {state['paid_fen']} fen  "
        f"refunded {state['refunded_fen']} fen",
    ]
    for payment in state["payments"]:
        lines.append(
            f"  payment {payment['out_trade_no']} {payment['status']} {payment['transaction_id'] or ''}".rstrip()
        )
    for refund in state["refunds"]:
        lines.append(f"  refund {refund['out_refund_no']} {refund['status']} {refund['amount_fen']} fen")
    if state["review_reasons"]:
        lines.append(f"  needs review: {', '.join(state['review_reasons'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
