"""Auditors: an order's history and its state as of any moment, from the events themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from adapters.wechatpay.beijing import BEIJING
from api.deps import Rt, role
from api.models import History, RefusedCallbacks
from domain.apikey import OPERATOR, Principal
from domain.audit import RefusedCallback

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get(
    "/orders/{merchant_order_no}/history",
    response_model=History,
    summary="Every event of an order up to as_of, and its state then",
)
def history(
    merchant_order_no: str,
    who: Annotated[Principal, Depends(role("auditor"))],
    rt: Rt,
    as_of: datetime | None = None,
) -> dict[str, Any]:
    if as_of is not None and as_of.tzinfo is None:
        raise HTTPException(422, "as_of needs a UTC offset, e.g. 2026-11-22T10:00:00+08:00")
    events = rt.rooms.reads.order_history(who.mchid, merchant_order_no, as_of)
    state = (
        rt.rooms.reads.order_state_as_of(who.mchid, merchant_order_no, as_of)
        if as_of
        else rt.rooms.reads.order_view(who.mchid, merchant_order_no)
    )
    return {
        "merchant_order_no": merchant_order_no,
        "as_of": as_of.astimezone(BEIJING).isoformat() if as_of else None,
        "events": [e.as_json() for e in events],
        "state": state,
    }


@router.get(
    "/refused-callbacks",
    response_model=RefusedCallbacks,
    summary="Callbacks the ledger refused (bad signature, stale, oversized, throttled), newest first",
)
def refused_callbacks(
    who: Annotated[Principal, Depends(role("auditor", OPERATOR))],
    rt: Rt,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
    reason: Annotated[str | None, Query(max_length=100, description="words the refusal's reason contains")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Any:
    """Every refusal is evidence (rule 3).  A merchant's auditor sees those that came to its own notify path;
    the deployment's operator sees every one, those on the shared paths (which name no merchant) included."""
    for name, value in (("from", from_), ("to", to)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"{name} needs a UTC offset, e.g. 2026-11-22T00:00:00+08:00")
    found = rt.fleet.refused_callbacks_seen_by(None if who.role == OPERATOR else who.mchid, reason or "", from_, to)
    return {"refused": [_refused_view(r) for r in reversed(found[-limit:])]}


def _refused_view(refused: RefusedCallback) -> dict[str, Any]:
    return {
        "id": str(refused.id),
        "received_at": refused.received_at.astimezone(BEIJING).isoformat(),
        "path": refused.path,
        "remote": refused.remote,
        "reason": refused.reason,
        "headers": refused.headers,
        "body": refused.body,
        "body_bytes": refused.body_bytes,
        "body_sha256": refused.body_sha256,
    }
