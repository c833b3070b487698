"""``zhangben merchants add|list|set|deactivate``: a service provider's sub-merchants from the command line.

The same commands as ``/v1/sub-merchants`` (application/submerchants.py), recorded as done by ``cli <user>``;
every running process serves the change within seconds (it follows the records), no restart.
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from adapters.wechatpay.config import load_merchants, load_providers
from adapters.wechatpay.merchant_book import MerchantBook
from application.apikeys import ApiKeys
from application.submerchants import SubMerchants
from bootstrap.ledger import open_directory
from bootstrap.settings import load_settings
from domain.submerchant import SubMerchant
from zhangben import terminal
from zhangben.usage import UsageError


def _desk() -> SubMerchants:
    settings = load_settings()
    book = MerchantBook(
        load_merchants(settings.merchants, settings.config_path),
        load_providers(settings.providers, settings.config_path),
    )
    directory = open_directory(settings.database_url)
    return SubMerchants(directory, book, ApiKeys(directory))


def _by() -> str:
    return f"cli {getpass.getuser()}"


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the options name (only those: ``set`` changes nothing else)."""
    out: dict[str, Any] = {}
    if args.name is not None:
        out["name"] = args.name
    if args.app:
        apps = []
        for text in args.app:
            appid, _, channels = text.partition(":")
            apps.append({"appid": appid, "channels": [c for c in channels.split(",") if c]})
        out["apps"] = apps
    for option in ("order_ttl_minutes", "qr_ttl_minutes"):
        if getattr(args, option) is not None:
            out[option] = getattr(args, option)
    if args.return_url_host:
        out["return_url_hosts"] = list(args.return_url_host)
    return out


def _describe(record: SubMerchant) -> str:
    s = record.settings
    apps = ", ".join(f"{a['appid']} ({'/'.join(a['channels']) or 'no channel'})" for a in s.get("apps", [])) or "none"
    return (
        f"sub-merchant {record.sub_mchid} of provider {record.provider}: {s.get('name')}, "
        f"{'active' if record.active else 'DEACTIVATED'}; apps {apps}; orders live {s.get('order_ttl_minutes')} min"
        + (f", QR codes {s['qr_ttl_minutes']} min" if s.get("qr_ttl_minutes") else "")
        + f"; return hosts {', '.join(s.get('return_url_hosts', [])) or 'none'}"
    )


def cmd_merchants_add(args: argparse.Namespace) -> int:
    desk = _desk()
    try:
        provider = args.provider or _only_provider(desk)
        record, created = desk.add(provider, args.sub_mchid, _settings(args), _by())
        print(_describe(record))
        if created:
            print(f"API key for its shop (shown once; role merchant): {desk.issue_key(provider, record.sub_mchid)}")
        else:
            print("(already added with these settings: nothing changed)")
    finally:
        desk.directory.close()
    return 0


def _only_provider(desk: SubMerchants) -> str:
    providers = list(desk.book.providers)
    if len(providers) != 1:
        raise UsageError(f"name the provider with --provider (configured: {', '.join(providers) or 'none'})")
    return providers[0]


def _record(desk: SubMerchants, sub_mchid: str) -> SubMerchant:
    found = [r for r in desk.list() if r.sub_mchid == sub_mchid]
    if not found:
        raise UsageError(f"no sub-merchant {sub_mchid} (see `zhangben merchants list`)")
    return found[0]


def cmd_merchants_set(args: argparse.Namespace) -> int:
    desk = _desk()
    try:
        changes = _settings(args)
        if args.active is not None:
            changes["active"] = args.active == "yes"
        if not changes:
            raise UsageError("name at least one setting to change (see `zhangben merchants set --help`)")
        record = _record(desk, args.sub_mchid)
        print(_describe(desk.change(record.provider, record.sub_mchid, changes, _by())))
    finally:
        desk.directory.close()
    return 0


def cmd_merchants_deactivate(args: argparse.Namespace) -> int:
    desk = _desk()
    try:
        record = _record(desk, args.sub_mchid)
        desk.change(record.provider, record.sub_mchid, {"active": False}, _by())
        print(f"sub-merchant {record.sub_mchid} deactivated: its new orders are refused (403) within seconds in every")
        print(
            "process; its callbacks, refunds and reconciliation go on. `zhangben merchants set --active yes` undoes it"
        )
    finally:
        desk.directory.close()
    return 0


def cmd_merchants_list(args: argparse.Namespace) -> int:
    desk = _desk()
    try:
        rows = [
            (m.mchid, "configured", m.account_mchid if m.is_partner else "", m.name, "active", f"{m.order_ttl_minutes}")
            for m in desk.book.configured.values()
            if args.provider is None
        ]
        rows += [
            (
                r.sub_mchid,
                "sub-merchant",
                r.provider,
                str(r.settings.get("name")),
                "active" if r.active else "deactivated",
                str(r.settings.get("order_ttl_minutes")),
            )
            for r in desk.list(args.provider)
        ]
    finally:
        desk.directory.close()
    terminal.table(("mchid", "kind", "provider", "name", "state", "order min"), rows)
    return 0
