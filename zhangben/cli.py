"""The ``zhangben`` command: the parser, and one place that runs a command.

Every user mistake ends in one line on standard error and a non-zero exit;
tracebacks are for bugs only.  Each command's module is loaded only when
that command runs (``handler = "module:function"``), so ``zhangben --help``
and the short commands start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from adapters.persistence import PersistenceError, is_unavailable
from adapters.wechatpay.errors import MerchantConfigError, WechatPayError
from bootstrap.settings import SettingsError
from domain.apikey import ROLES
from domain.errors import LedgerError
from zhangben.usage import UsageError

PROJECTIONS = ("order_status", "journal", "business_events")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(_command(args.handler)(args) or 0)
    except BrokenPipeError:
        # the reader went away (`zhangben history … | head`): stop quietly, as a pipe's writer should
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer that lost its reader
    except (UsageError, SettingsError, PersistenceError, LedgerError, MerchantConfigError, WechatPayError) as exc:
        print(f"zhangben: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        # down, unreachable, read-only or full: one line; the store's transactions leave nothing half-written
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"zhangben: error: the database cannot be used: {first}", file=sys.stderr)
        return 1


def _command(handler: str) -> Callable[[argparse.Namespace], int]:
    """The function a command names; its module (and what that imports) is loaded now, not at start-up."""
    module, _, function = handler.partition(":")
    command: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), function)
    return command


def _version() -> str:
    try:
        return metadata.version("zhangben")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zhangben",
        description="zhangben (账本): an event-sourced payment ledger for WeChat Pay.",
        epilog="Settings: ZHANGBEN_CONFIG (default ./zhangben.toml), ZHANGBEN_DATABASE_URL "
        "(default sqlite:///var/zhangben.db).",
    )
    parser.add_argument("--version", action="version", version=f"zhangben {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    db = commands.add_parser("db", help="the event store's tables")
    db_commands = db.add_subparsers(title="db commands", metavar="COMMAND")
    db_init = db_commands.add_parser("init", help="create the event store tables once, before workers start")
    db_init.set_defaults(handler="zhangben.cli_db:cmd_db_init")

    history = commands.add_parser("history", help="an order's full event history and its state")
    history.add_argument("merchant_order_no", metavar="MERCHANT_ORDER_NO", help="the shop's own order number")
    history.add_argument("--merchant", metavar="MCHID", help="the merchant (mchid, or sub_mchid of a sub-merchant)")
    history.add_argument(
        "--as-of",
        metavar="ISO8601",
        help="show the history up to, and the state at, this moment (no offset = Beijing time)",
    )
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    history.set_defaults(handler="zhangben.commands:cmd_history")

    keys = commands.add_parser("keys", help="development keys")
    keys_commands = keys.add_subparsers(title="keys commands", metavar="COMMAND")
    keys_init = keys_commands.add_parser("init", help="write a development keyset and a matching zhangben.toml")
    keys_init.add_argument("--dir", default="var/keys", help="where the key files go (default var/keys)")
    keys_init.add_argument(
        "--config", default=None, help="the config file to write (default $ZHANGBEN_CONFIG or zhangben.toml)"
    )
    keys_init.add_argument("--ledger-url", default="http://127.0.0.1:8000", help="base of the notify_urls")
    keys_init.add_argument("--sandbox-url", default="http://127.0.0.1:8900", help="the WeChat Pay base URL to use")
    keys_init.set_defaults(handler="zhangben.cli_sandbox:cmd_keys_init")
    keys_rotate = keys_commands.add_parser(
        "rotate-data-key",
        help="add a new data key (first in data_key_file) and seal every secret in the database again under it",
    )
    keys_rotate.set_defaults(handler="zhangben.commands:cmd_keys_rotate_data_key")

    tour = commands.add_parser("demo", help="the end-to-end tour: every step printed, exit 0 if all held")
    tour.add_argument("--workdir", metavar="DIR", help="run in DIR and keep it (keys, database, the processes' log)")
    tour.set_defaults(handler="zhangben.demo:cmd_demo")

    serve = commands.add_parser("serve", help="run the ledger's HTTP service")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="the port to listen on (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (PostgreSQL only for more than 1)")
    serve.add_argument("--no-projections", action="store_true", help="do not run the projections in this process")
    serve.add_argument("--no-scheduler", action="store_true", help="do not run the scheduled jobs in this process")
    serve.add_argument("--no-webhooks", action="store_true", help="do not push webhooks from this process")
    serve.add_argument(
        "--api-only",
        action="store_true",
        help="answer requests only; `zhangben work` runs the projections, jobs and webhooks (docs/going-live.md)",
    )
    serve.set_defaults(handler="zhangben.serve:cmd_serve")

    work = commands.add_parser(
        "work", help="run the projections, the scheduled jobs and webhook deliveries, without HTTP"
    )
    work.add_argument("--metrics-port", type=int, metavar="PORT", help="serve this process's /metrics on PORT")
    work.add_argument("--metrics-host", default="127.0.0.1", help="the address for --metrics-port")
    work.set_defaults(handler="zhangben.serve:cmd_work")

    apikey = commands.add_parser("apikey", help="API keys")
    apikey_commands = apikey.add_subparsers(title="apikey commands", metavar="COMMAND")
    apikey_create = apikey_commands.add_parser("create", help="print a new API key once (only its hash is stored)")
    apikey_create.add_argument(
        "--merchant", metavar="MCHID", help="whose orders the key reaches (every role but operator needs one)"
    )
    apikey_create.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="merchant: orders; finance: bills and exports; auditor: read-only; support: 客服; "
        "operator: the deployment's (no merchant): every refused callback; provider: a [[providers]] mchid, its "
        "sub-merchants",
    )
    apikey_create.add_argument("--expires-in-days", type=int, metavar="N", help="the key stops working after N days")
    apikey_create.set_defaults(handler="zhangben.commands:cmd_apikey_create")
    apikey_list = apikey_commands.add_parser("list", help="the keys issued: id, merchant, role, state (never a secret)")
    apikey_list.add_argument("--merchant", metavar="MCHID", help="only this merchant's keys (default: all)")
    apikey_list.set_defaults(handler="zhangben.commands:cmd_apikey_list")
    apikey_revoke = apikey_commands.add_parser("revoke", help="a key stops working now (401), in every worker")
    apikey_revoke.add_argument("key_id", help="the 16 hex characters after zb_ (see `apikey list`)")
    apikey_revoke.set_defaults(handler="zhangben.commands:cmd_apikey_revoke")
    apikey_rotate = apikey_commands.add_parser(
        "rotate", help="print a new key with the same merchant and role; the old one works for the grace period"
    )
    apikey_rotate.add_argument("key_id", help="the 16 hex characters after zb_ (see `apikey list`)")
    apikey_rotate.add_argument("--grace-hours", type=float, default=24.0, help="how long the old key still works")
    apikey_rotate.set_defaults(handler="zhangben.commands:cmd_apikey_rotate")

    _finance_commands(commands)
    _partition_commands(commands)
    _dev_commands(commands)
    _scheduler_commands(commands)
    _webhook_commands(commands)
    _merchant_commands(commands)

    sandbox = commands.add_parser("sandbox", help="run the local WeChat Pay sandbox")
    sandbox.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=8900, help="the port to listen on (default 8900)")
    sandbox.add_argument(
        "--tls-port",
        type=int,
        default=None,
        help="the mutual-TLS listener for /secapi (default: the port of wechatpay_secapi_base_url, else --port + 1)",
    )
    sandbox.set_defaults(handler="zhangben.cli_sandbox:cmd_sandbox")
    return parser


def _finance_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reconcile = commands.add_parser("reconcile", help="import a day's WeChat trade bill and reconcile it")
    reconcile.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="the bill's day (Beijing time)")
    reconcile.add_argument("--bill", metavar="FILE", help="read the bill from a file instead of downloading it")
    reconcile.add_argument(
        "--fund-flow-bill",
        metavar="FILE",
        help="read the fund flow bill (资金账单) from a file; without --bill it is downloaded with the trade bill",
    )
    reconcile.add_argument("--merchant", metavar="MCHID", help="one merchant (default: every merchant configured)")
    reconcile.set_defaults(handler="zhangben.cli_finance:cmd_reconcile")

    exp = commands.add_parser(
        "export", help="finance files for a clerk: XLSX (summary, totals, 元) or CSV for Excel (docs/finance.md)"
    )
    exp.add_argument(
        "what",
        choices=["reconciliation", "journal", "orders"],
        help="reconciliation: summary, every bill line and the differences; journal: lines and trial balance; "
        "orders: one row per order",
    )
    exp.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="the first day (Beijing time)")
    exp.add_argument("--to", metavar="YYYY-MM-DD", help="the last day, included (default: --date)")
    exp.add_argument("--format", choices=["csv", "xlsx"], help="default: the extension of --out")
    exp.add_argument("--out", required=True, metavar="FILE", help="the file to write (.xlsx or .csv)")
    exp.add_argument("--merchant", metavar="MCHID", help="one merchant (default: every merchant of zhangben.toml)")
    exp.set_defaults(handler="zhangben.cli_finance:cmd_export")

    projections = commands.add_parser("projections", help="the read models")
    sub = projections.add_subparsers(title="projections commands", metavar="COMMAND")
    status = sub.add_parser("status", help="each projection's position and lag")
    status.set_defaults(handler="zhangben.cli_finance:cmd_projections_status")
    rebuild = sub.add_parser("rebuild", help="drop a projection and replay the log into it")
    rebuild.add_argument(
        "name",
        nargs="?",
        choices=(*PROJECTIONS, "reconciliation"),
        help="one projection (default: all of them); reconciliation: again from the kept bill files and the log",
    )
    rebuild.set_defaults(handler="zhangben.cli_finance:cmd_projections_rebuild")
    run = sub.add_parser("run", help="run one projection in this process")
    run.add_argument("name", choices=PROJECTIONS, help="the projection this process follows the log for")
    run.set_defaults(handler="zhangben.cli_finance:cmd_projections_run")


def _partition_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("partitions", help="where each merchant's money lives ([partitioning])")
    sub = parser.add_subparsers(title="partitions commands", metavar="COMMAND")
    listing = sub.add_parser("list", help="each partition: its schema and database, merchants, log head, lag")
    listing.add_argument("--merchants", action="store_true", help="also every merchant and its partition")
    listing.add_argument("--moves", action="store_true", help="also every partition move, how it went")
    listing.set_defaults(handler="zhangben.cli_partitions:cmd_partitions_list")
    place = sub.add_parser(
        "place", help="put a merchant on a partition before it is first configured (a big one); never moved after"
    )
    place.add_argument("merchant", metavar="MCHID", help="the merchant: mchid, or sub_mchid of a sub-merchant")
    place.add_argument("--partition", type=int, required=True, metavar="P", help="the partition, from 0")
    place.set_defaults(handler="zhangben.cli_partitions:cmd_partitions_place")
    move = sub.add_parser(
        "move", help="move a partition to another cell while the ledger runs (a few seconds' freeze of it alone)"
    )
    move.add_argument("partition", type=int, metavar="P", help="the partition, from 0")
    move.add_argument("--to", metavar="CELL", help="the cell it goes to (a [[cells]] name)")
    move.add_argument(
        "--give-up", action="store_true", help="undo a move of P that did not finish (its command was killed)"
    )
    move.set_defaults(handler="zhangben.cli_partitions:cmd_partitions_move")


def _dev_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("dev", help="development: cells of Patroni nodes on this machine")
    sub = parser.add_subparsers(title="dev commands", metavar="COMMAND")
    cluster = sub.add_parser("cluster", help="etcd and cells of three Patroni nodes on loopback ports")
    actions = cluster.add_subparsers(title="cluster commands", metavar="COMMAND")
    up = actions.add_parser("up", help="start them and print the [[cells]] tables for zhangben.toml")
    up.add_argument("--cells", type=int, default=2, help="how many cells (default 2: a and b)")
    up.add_argument("--nodes", type=int, default=3, help="nodes per cell (default 3)")
    up.set_defaults(handler="zhangben.cli_dev:cmd_cluster_up")
    status = actions.add_parser("status", help="each node: its port, its role, its state")
    status.set_defaults(handler="zhangben.cli_dev:cmd_cluster_status")
    down = actions.add_parser("down", help="stop them and remove their files")
    down.set_defaults(handler="zhangben.cli_dev:cmd_cluster_down")
    for command in (up, status, down):
        command.add_argument("--dir", default="var/cluster", help="where it lives (default var/cluster)")


def _scheduler_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "scheduler", help="the jobs: expiry, compensating queries, refunds, bills, certificates"
    )
    sub = parser.add_subparsers(title="scheduler commands", metavar="COMMAND")
    run = sub.add_parser("run", help="run the jobs in this process (serve runs them too unless --no-scheduler)")
    run.add_argument("--tick", type=float, default=5.0, help="seconds between looks at what is due")
    run.set_defaults(handler="zhangben.cli_scheduler:cmd_scheduler_run")
    status = sub.add_parser("status", help="each job's last and next run")
    status.set_defaults(handler="zhangben.cli_scheduler:cmd_scheduler_status")


def _webhook_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("webhooks", help="push business events to the merchants' endpoints")
    sub = parser.add_subparsers(title="webhooks commands", metavar="COMMAND")
    run = sub.add_parser("run", help="deliver in this process (serve delivers too unless --no-webhooks)")
    run.add_argument("--once", action="store_true", help="deliver what is due now, wait for it, and stop")
    run.set_defaults(handler="zhangben.cli_webhooks:cmd_webhooks_run")
    create = sub.add_parser("create", help="add an endpoint and print its signing secret (shown once)")
    create.add_argument("--merchant", required=True, metavar="MCHID", help="whose events are sent")
    create.add_argument("--url", required=True, help="the receiver, an http(s) URL (https in production)")
    create.add_argument("--events", metavar="TYPE,TYPE", help="event types (default: all)")
    create.set_defaults(handler="zhangben.cli_webhooks:cmd_webhooks_create")
    listing = sub.add_parser("list", help="a merchant's endpoints")
    listing.add_argument("--merchant", required=True, metavar="MCHID", help="whose endpoints")
    listing.set_defaults(handler="zhangben.cli_webhooks:cmd_webhooks_list")
    delete = sub.add_parser("delete", help="remove an endpoint")
    delete.add_argument("--merchant", required=True, metavar="MCHID", help="whose endpoint")
    delete.add_argument("endpoint_id", help="the endpoint's id (see `webhooks list`)")
    delete.set_defaults(handler="zhangben.cli_webhooks:cmd_webhooks_delete")


def _merchant_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("merchants", help="a service provider's sub-merchants (特约商户), added while it runs")
    sub = parser.add_subparsers(title="merchants commands", metavar="COMMAND")

    def settings_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--name", help="the shop's name")
        command.add_argument(
            "--app", action="append", metavar="APPID:CHANNELS", help="a sub_appid and its channels (wx…:jsapi,native)"
        )
        command.add_argument("--order-ttl-minutes", type=int, metavar="N", help="an order's default lifetime (10)")
        command.add_argument("--qr-ttl-minutes", type=int, metavar="N", help="each QR code's lifetime within it")
        command.add_argument(
            "--return-url-host", action="append", metavar="HOST", help="a host return_url may name (repeat)"
        )

    add = sub.add_parser("add", help="add a sub-merchant and print its first API key (shown once)")
    add.add_argument("sub_mchid", help="WeChat's id of the sub-merchant (its 进件 done)")
    add.add_argument("--provider", metavar="SP_MCHID", help="the [[providers]] it belongs to (default: the only one)")
    settings_options(add)
    add.set_defaults(handler="zhangben.cli_merchants:cmd_merchants_add")
    listing = sub.add_parser("list", help="every merchant: configured ones and sub-merchants, active or not")
    listing.add_argument("--provider", metavar="SP_MCHID", help="only this provider's sub-merchants")
    listing.set_defaults(handler="zhangben.cli_merchants:cmd_merchants_list")
    change = sub.add_parser("set", help="change a sub-merchant's settings (only those named)")
    change.add_argument("sub_mchid", help="the sub-merchant (see `zhangben merchants list`)")
    settings_options(change)
    change.add_argument("--active", choices=("yes", "no"), help="no: new orders are refused (403)")
    change.set_defaults(handler="zhangben.cli_merchants:cmd_merchants_set")
    off = sub.add_parser("deactivate", help="refuse a sub-merchant's new orders; its money paths go on")
    off.add_argument("sub_mchid", help="the sub-merchant (see `zhangben merchants list`)")
    off.set_defaults(handler="zhangben.cli_merchants:cmd_merchants_deactivate")


if __name__ == "__main__":
    sys.exit(main())
