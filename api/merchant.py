"""The merchant API (contract §4): orders, payments, refunds, live status, mini-program login."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from api.deps import role, runtime
from domain.errors import OrderConflict, OrderNotFound
from domain.status import OrderStatus
from zhangben.apikeys import Principal
from zhangben.idempotency import IdempotencyKey, body_digest
from zhangben.views import refund_view
from zhangben.wiring import Runtime

router = APIRouter(prefix="/v1", tags=["merchant"])
Merchant = Annotated[Principal, Depends(role("merchant"))]
Rt = Annotated[Runtime, Depends(runtime)]
Channel = Literal["native", "jsapi", "miniprogram", "app", "h5"]
OrderNo = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-|*@]+$")]
Fen = Annotated[StrictInt, Field(gt=0, le=10**12, description="integer number of fen (分)")]
# After these nobody waits on the payer any more: the live stream ends.
SETTLED = {"PAID", "PARTIALLY_REFUNDED", "REFUNDED", "CLOSED", "EXPIRED", "NEEDS_REVIEW"}


class CreateOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    merchant_order_no: OrderNo
    amount_fen: Fen
    description: Annotated[StrictStr, Field(min_length=1, max_length=127)]
    channel: Channel
    payer_openid: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None
    expire_seconds: Annotated[StrictInt, Field(ge=60, le=7200)] = 900
    attach: Annotated[StrictStr, Field(max_length=128)] | None = None


class NewPayment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Channel | None = None
    payer_openid: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None


class CreateRefund(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out_refund_no: OrderNo | None = None
    amount_fen: Fen
    reason: Annotated[StrictStr, Field(max_length=80)] = ""


class MiniProgramLogin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Annotated[StrictStr, Field(min_length=1, max_length=128)]


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "127.0.0.1"


def _await_projection(request: Request, rt: Runtime) -> None:
    """Read-after-write: a list shows every command that finished before it was asked for.

    The wait is here, where the view is read, not on the commands' hot path;
    it is brief (the projection follows the log within tens of milliseconds).
    """
    if getattr(request.app.state, "projection_running", False):
        rt.followers["order_status"].wait_for(rt.ledger.recorder.max_notification_id() or 0, timeout=1.0)


@router.post("/orders", status_code=201, summary="Create an order with its first payment")
def create_order(body: CreateOrder, who: Merchant, rt: Rt, request: Request, response: Response,
                 idempotency_key: Annotated[str | None, Header(max_length=128)] = None) -> dict[str, Any]:
    digest = body_digest(body.model_dump())
    if idempotency_key:
        known = _idempotency(rt, who.mchid, idempotency_key)
        if known is not None and known.body_digest != digest:
            raise OrderConflict(f"Idempotency-Key {idempotency_key!r} was used with a different body")
    try:
        rt.ledger.get_order(who.mchid, body.merchant_order_no)
        response.status_code = 200  # the same request again: the same answer
    except OrderNotFound:
        pass
    order, checkout = rt.service.create_order(
        who.mchid, body.merchant_order_no, body.amount_fen, body.description, body.channel, body.payer_openid,
        body.expire_seconds, body.attach, _client_ip(request),
    )
    if idempotency_key:
        _remember(rt, who.mchid, idempotency_key, digest, body.merchant_order_no)
    return rt.ledger.order_view(who.mchid, order.merchant_order_no) | {"payment": checkout.view()}


def _idempotency(rt: Runtime, mchid: str, key: str) -> IdempotencyKey | None:
    try:
        return rt.ledger.repository.get(IdempotencyKey.create_id(mchid, key))
    except AggregateNotFoundError:  # an unused key
        return None


def _remember(rt: Runtime, mchid: str, key: str, digest: str, merchant_order_no: str) -> None:
    if _idempotency(rt, mchid, key) is None:
        try:
            rt.ledger.save(IdempotencyKey(mchid=mchid, key=key, body_digest=digest,
                                          merchant_order_no=merchant_order_no))
        except IntegrityError:  # a concurrent twin recorded it first
            pass


@router.post("/orders/{merchant_order_no}/payments", status_code=201, summary="A new payment attempt")
def new_payment(merchant_order_no: str, who: Merchant, rt: Rt, request: Request,
                body: NewPayment | None = None) -> dict[str, Any]:
    body = body or NewPayment()
    checkout = rt.service.new_payment(who.mchid, merchant_order_no, body.channel, body.payer_openid,
                                      _client_ip(request))
    return rt.ledger.order_view(who.mchid, merchant_order_no) | {"payment": checkout.view()}


@router.get("/orders/{merchant_order_no}", summary="The order view (long-poll with wait and after_version)")
async def get_order(merchant_order_no: str, who: Merchant, rt: Rt,
                    wait: Annotated[int, Query(ge=0, le=30)] = 0,
                    after_version: Annotated[int, Query(ge=0)] | None = None) -> dict[str, Any]:
    view = await asyncio.to_thread(rt.ledger.order_view, who.mchid, merchant_order_no)
    deadline = time.monotonic() + wait
    while after_version is not None and view["version"] <= after_version and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        view = await asyncio.to_thread(rt.ledger.order_view, who.mchid, merchant_order_no)
    return view


@router.get("/orders", summary="List orders, newest first")
def list_orders(who: Merchant, rt: Rt, request: Request, status: OrderStatus | None = None, created_from: datetime | None = None,
                created_to: datetime | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                cursor: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
    for name, value in (("created_from", created_from), ("created_to", created_to)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"{name} needs a UTC offset, e.g. 2026-11-22T00:00:00+08:00")
    _await_projection(request, rt)
    orders, next_cursor = rt.orders.list(who.mchid, status.value if status else None, created_from, created_to,
                                         limit, cursor)
    return {"orders": orders, "next_cursor": next_cursor}


@router.get("/orders/{merchant_order_no}/stream", summary="Live status as Server-Sent Events",
            response_class=StreamingResponse)
async def stream(merchant_order_no: str, who: Merchant, rt: Rt) -> StreamingResponse:
    first = await asyncio.to_thread(rt.ledger.order_view, who.mchid, merchant_order_no)

    async def events() -> AsyncIterator[str]:
        view, last, quiet = first, -1, 0.0
        while True:
            if view["version"] != last:
                last, quiet = view["version"], 0.0
                yield f"event: status\nid: {last}\ndata: {json.dumps(view, ensure_ascii=False)}\n\n"
                if view["status"] in SETTLED:
                    return
            elif quiet >= 15:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(0.2)
            quiet += 0.2
            view = await asyncio.to_thread(rt.ledger.order_view, who.mchid, merchant_order_no)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/orders/{merchant_order_no}/sync", summary="Ask WeChat now (\"I have paid\")")
def sync(merchant_order_no: str, who: Merchant, rt: Rt) -> dict[str, Any]:
    return rt.service.sync(who.mchid, merchant_order_no)


@router.post("/orders/{merchant_order_no}/close", summary="Close an unpaid order at WeChat and in the ledger")
def close(merchant_order_no: str, who: Merchant, rt: Rt) -> dict[str, Any]:
    rt.service.close_order(who.mchid, merchant_order_no)
    return rt.ledger.order_view(who.mchid, merchant_order_no)


@router.post("/orders/{merchant_order_no}/refunds", status_code=202, summary="Refund part or all of a payment")
def create_refund(merchant_order_no: str, body: CreateRefund, who: Merchant, rt: Rt) -> dict[str, Any]:
    out_refund_no = body.out_refund_no or f"RF{secrets.token_hex(12)}"
    refund = rt.service.refund(who.mchid, merchant_order_no, out_refund_no, body.amount_fen, body.reason)
    return refund_view(refund)


@router.get("/refunds/{out_refund_no}", summary="The refund view")
def get_refund(out_refund_no: str, who: Merchant, rt: Rt) -> dict[str, Any]:
    return refund_view(rt.ledger.get_refund(who.mchid, out_refund_no))


@router.post("/wechat/miniprogram/login", summary="Mini-program login: code → openid")
def miniprogram_login(body: MiniProgramLogin, who: Merchant, rt: Rt, request: Request) -> dict[str, Any]:
    merchant = rt.client.merchant(who.mchid)
    appid = merchant.sub_appid or merchant.appid
    if not merchant.appsecret:
        raise HTTPException(409, "no appsecret_file is configured for this merchant")
    try:
        answer = rt.client.http.get(f"{rt.settings.wechat_api_base_url}/sns/jscode2session", params={
            "appid": appid, "secret": merchant.appsecret, "js_code": body.code, "grant_type": "authorization_code",
        }).json()
    except (httpx.HTTPError, ValueError):
        raise HTTPException(503, "WeChat login is unreachable; try again") from None
    errcode = int(answer.get("errcode") or 0)
    if errcode in (-1, 45011):
        raise HTTPException(503, f"WeChat login is busy ({errcode}); try again")
    if errcode:
        raise HTTPException(409, f"WeChat refused the code ({errcode} {answer.get('errmsg', '')}): ask wx.login again")
    # The session key stays here: kept in this process for the session, never returned or logged.
    request.app.state.session_keys[answer["openid"]] = answer.get("session_key", "")
    return {"openid": answer["openid"]} | ({"unionid": answer["unionid"]} if answer.get("unionid") else {})
