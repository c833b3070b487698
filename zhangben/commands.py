"""The short commands: ``history`` and ``apikey create``.

Loaded by ``zhangben.cli`` only when one of them runs.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from adapters.wechatpay.beijing import BEIJING
from application.history import HistoryEvent
from application.ledger import Ledger
from application.views import OrderView
from bootstrap.ledger import open_ledger
from bootstrap.settings import Settings, load_settings
from domain.errors import OrderNotFound
from zhangben.usage import UsageError


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
