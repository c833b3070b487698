"""The short commands: ``history`` and ``apikey create|list|revoke|rotate``.

Loaded by ``zhangben.cli`` only when one of them runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta

from adapters.secretbox import rotate
from adapters.wechatpay.beijing import BEIJING
from application.apikeys import ApiKeys
from application.history import HistoryEvent
from application.reads import OrderReads
from application.views import OrderView
from bootstrap.ledger import open_directory
from bootstrap.partitioning import merchant_ledger
from bootstrap.settings import Settings, load_settings
from bootstrap.wiring import reseal_secrets
from domain.apikey import DEPLOYMENT, OPERATOR, PROVIDER, ApiKey
from domain.errors import OrderNotFound
from domain.submerchant import SubMerchant
from zhangben import terminal
from zhangben.usage import UsageError


def cmd_apikey_create(args: argparse.Namespace) -> int:
    settings = load_settings()
    known = settings.merchant_ids()
    if args.role == OPERATOR:
        if args.merchant:
            raise UsageError("an operator key is the deployment's: it names no merchant (drop --merchant)")
        args.merchant = DEPLOYMENT
    elif not args.merchant:
        raise UsageError(f"--merchant is needed for a {args.role} key")
    elif args.role == PROVIDER:
        providers = [str(p.get("mchid")) for p in settings.providers]
        if args.merchant not in providers:
            raise UsageError(f"{args.merchant} is not a [[providers]] mchid in {settings.config_path}: {providers}")
    days = getattr(args, "expires_in_days", None)
    if days is not None and days < 1:
        raise UsageError("--expires-in-days must be at least 1")
    ledger = open_directory(settings.database_url)
    try:
        added = ledger.find(SubMerchant.create_id(args.merchant)) is not None  # a provider's, through the API
        if args.role != PROVIDER and known and args.merchant not in known and not added:
            raise UsageError(f"merchant {args.merchant} is not in {settings.config_path} (known: {', '.join(known)})")
        expires = ledger.clock() + timedelta(days=days) if days else None
        key = ApiKeys(ledger).issue_api_key(args.merchant, args.role, expires)
    finally:
        ledger.close()
    print(key)
    return 0


def cmd_keys_rotate_data_key(args: argparse.Namespace) -> int:
    """A new data key first in the keyring (the older ones stay, to open what they sealed), then every stored
    secret sealed again under it.  Running processes notice the changed file by themselves."""
    settings = load_settings()
    if settings.data_key_file is None:
        raise UsageError(f"no data_key_file is set in {settings.config_path}: `zhangben keys init` writes one")
    kid = rotate(settings.data_key_file)
    endpoints, sessions = reseal_secrets(settings)
    print(f"data key {kid} now seals; sealed again: {endpoints} webhook endpoint(s), {sessions} session key(s)")
    return 0


def _key_state(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return f"revoked {key.revoked_at.astimezone(BEIJING).isoformat(timespec='seconds')}"
    if key.expires_at is not None:
        word = "expires" if now < key.expires_at else "expired"
        return f"{word} {key.expires_at.astimezone(BEIJING).isoformat(timespec='seconds')}"
    return "active"


def cmd_apikey_list(args: argparse.Namespace) -> int:
    ledger = open_directory(load_settings().database_url)
    try:
        keys, now = ApiKeys(ledger).api_keys(args.merchant), ledger.clock()
    finally:
        ledger.close()
    terminal.table(
        ("key id", "merchant", "role", "issued (Beijing)", "state"),
        (
            (
                k.key_id,
                k.mchid,
                k.role,
                k.issued_at.astimezone(BEIJING).isoformat(timespec="seconds"),
                _key_state(k, now),
            )
            for k in keys
        ),
    )
    return 0


def cmd_apikey_revoke(args: argparse.Namespace) -> int:
    ledger = open_directory(load_settings().database_url)
    try:
        key = ApiKeys(ledger).revoke_api_key(_key_id(args.key_id))
    finally:
        ledger.close()
    print(f"key {key.key_id} ({key.mchid}, {key.role}) revoked: it answers 401 from now on")
    return 0


def cmd_apikey_rotate(args: argparse.Namespace) -> int:
    if args.grace_hours < 0:
        raise UsageError("--grace-hours must not be negative")
    ledger = open_directory(load_settings().database_url)
    try:
        key, record = ApiKeys(ledger).rotate_api_key(_key_id(args.key_id), timedelta(hours=args.grace_hours))
    finally:
        ledger.close()
    print(key)
    print(f"(the old key {_key_id(args.key_id)} keeps working for {args.grace_hours:g} h)", file=sys.stderr)
    return 0


def _key_id(text: str) -> str:
    """A key id, also from a whole key pasted by mistake (only its id part is used)."""
    text = text.strip()
    if text.startswith("zb_"):
        text = text[3:].split("_", 1)[0]
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise UsageError(f"{text[:20]!r} is not a key id (16 hex characters; see `zhangben apikey list`)")
    return text


def parse_moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--as-of {text!r} is not an ISO 8601 date-time (e.g. 2026-11-22T10:00:00+08:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=BEIJING)


def cmd_history(args: argparse.Namespace) -> int:
    settings = load_settings()
    as_of = parse_moment(args.as_of) if args.as_of else None
    mchid = _find_merchant(settings, args.merchant, args.merchant_order_no)
    with merchant_ledger(settings, mchid) as ledger:  # the order is in its merchant's partition
        events = OrderReads(ledger).order_history(mchid, args.merchant_order_no, as_of)
        if as_of is None:
            state = OrderReads(ledger).order_view(mchid, args.merchant_order_no)
        else:
            state = OrderReads(ledger).order_state_as_of(mchid, args.merchant_order_no, as_of)
    if args.json:
        payload = {
            "merchant": mchid,
            "merchant_order_no": args.merchant_order_no,
            "as_of": as_of.astimezone(BEIJING).isoformat() if as_of else None,
            "events": [e.as_json() for e in events],
            "state": state,
        }
        print(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        print_history(mchid, args.merchant_order_no, as_of, events, state)
    return 0


def _find_merchant(settings: Settings, merchant: str | None, order_no: str) -> str:
    """The merchant named, or the one configured merchant that has this order (each looked for in its partition)."""
    if merchant:
        return merchant
    candidates = settings.merchant_ids()
    if not candidates:
        raise UsageError("no merchant configured: pass --merchant MCHID")
    found = []
    for mchid in candidates:
        with merchant_ledger(settings, mchid) as ledger:
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


def print_history(
    mchid: str, order_no: str, as_of: datetime | None, events: list[HistoryEvent], state: OrderView
) -> None:
    when = f"as of {as_of.astimezone(BEIJING).isoformat()}" if as_of else "now"
    print(f"order {order_no} (merchant {mchid}), {len(events)} events, {when}")
    terminal.table(
        ("time (Beijing, +08:00)", "aggregate", "v", "event", "details"),
        (
            (
                e.timestamp.astimezone(BEIJING).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23],
                e.aggregate,
                e.version,
                e.type,
                _summary(e),
            )
            for e in events
        ),
        right=("v",),
    )
    lines = [
        f"status {state['status']}  amount {state['amount_fen']} fen  paid {state['paid_fen']} fen  "
        f"refunded {state['refunded_fen']} fen"
    ]
    for payment in state["payments"]:
        lines.append(
            f"  payment {payment['out_trade_no']} {payment['status']} {payment['transaction_id'] or ''}".rstrip()
        )
    for refund in state["refunds"]:
        lines.append(f"  refund {refund['out_refund_no']} {refund['status']} {refund['amount_fen']} fen")
    if state["review_reasons"]:
        lines.append(f"  needs review: {', '.join(state['review_reasons'])}")
    print("\n".join(lines))
