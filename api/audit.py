"""Auditors: an order's history and its state as of any moment, from the events themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from adapters.wechatpay.beijing import BEIJING
from api.deps import Rt, role
from api.models import History
from domain.apikey import Principal

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
    events = rt.ledger.order_history(who.mchid, merchant_order_no, as_of)
    state = (
        rt.ledger.order_state_as_of(who.mchid, merchant_order_no, as_of)
        if as_of
        else rt.ledger.order_view(who.mchid, merchant_order_no)
    )
    return {
        "merchant_order_no": merchant_order_no,
        "as_of": as_of.astimezone(BEIJING).isoformat() if as_of else None,
        "events": [e.as_json() for e in events],
        "state": state,
    }
