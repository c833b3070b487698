"""The merchant API (docs/api.md): orders, payments, refunds, live status, mini-program login."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from api.client_ip import payer_ip
from api.deps import Merchant, Rt, await_projection, role, runtimes
from api.models import (
    AuthorizeUrl,
    CreateOrder,
    CreateRefund,
    HandleAbnormalRefund,
    MiniProgramDecrypt,
    MiniProgramLogin,
    MiniProgramSession,
    NewPayment,
    OAuthCode,
    OAuthOpenId,
    OrderList,
    OrderWithPayment,
    ResolveReview,
    ReviewNote,
)
from application.payments import OrderAnswer
from application.views import OrderView, RefundView, refund_view
from bootstrap.wiring import Runtime
from domain.apikey import Principal
from domain.limits import IDEMPOTENCY_KEY_MAX_CHARS
from domain.status import FINAL_ORDER, OrderStatus

router = APIRouter(prefix="/v1", tags=["merchant"])
# 客服 (support) sees an order, asks WeChat about it and files notes; it never moves money
Viewer = Annotated[Principal, Depends(role("merchant", "support"))]
# After these nobody waits on the payer any more: the live stream ends.
SETTLED = FINAL_ORDER


def _client_ip(request: Request, from_body: object = None) -> str:
    """The payer's IP (api/client_ip.py): the body's, else trusted proxies' headers, else the peer."""
    proxies = request.app.state.runtime.settings.trusted_proxies
    return payer_ip(request, str(from_body) if from_body else None, proxies)


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderWithPayment,
    summary="Create an order with its first payment",
    responses={200: {"model": OrderWithPayment, "description": "the same request again: the same answer"}},
)
def create_order(
    body: CreateOrder,
    who: Merchant,
    rt: Rt,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=IDEMPOTENCY_KEY_MAX_CHARS)] = None,
) -> dict[str, Any]:
    lifetime = rt.service.merchant(who.mchid).order_ttl_seconds  # the merchant's default, for a body naming none
    answer = rt.service.create_order(
        body.request(who.mchid, _client_ip(request, body.payer_client_ip), idempotency_key or None, lifetime)
    )
    if not answer.created:
        response.status_code = 200  # the same request again: the same answer
    return _with_cashier_url(answer, rt, request)


def _with_cashier_url(answer: OrderAnswer, rt: Runtime, request: Request) -> dict[str, Any]:
    """The answer, with the payer's link (``cashier_url``) for a Native attempt when payer pages are on."""
    base = rt.settings.public_base_url or str(request.base_url)
    url = rt.cashier.url(base, answer.order, answer.checkout.payment)
    return answer.as_json() | ({"cashier_url": url} if url else {})


@router.get("/return-key", summary="The public key that signs the payer's way back to a return_url (no key needed)")
def return_key(request: Request) -> dict[str, str]:
    """Public: a shop verifies the ``sig`` on its return URL with it (docs/api.md, "Back to the shop")."""
    signer = runtimes(request).home.cashier.signer
    if signer is None:
        raise HTTPException(404, "payer pages are off (no cashier_key_file): nothing is signed")
    return {"algorithm": "Ed25519", "key_id": signer.key_id, "public_key_pem": signer.public_pem}


@router.post(
    "/orders/{merchant_order_no}/payments",
    status_code=201,
    response_model=OrderWithPayment,
    summary="A new payment attempt",
)
def new_payment(
    merchant_order_no: str, who: Merchant, rt: Rt, request: Request, body: NewPayment | None = None
) -> dict[str, Any]:
    body = body or NewPayment()
    answer = rt.service.open_attempt(
        body.request(who.mchid, merchant_order_no, _client_ip(request, body.payer_client_ip))
    )
    return _with_cashier_url(answer, rt, request)


@router.get(
    "/orders/{merchant_order_no}",
    response_model=OrderView,
    summary="The order view (long-poll with wait and after_version)",
)
async def get_order(
    merchant_order_no: str,
    who: Viewer,
    rt: Rt,
    wait: Annotated[int, Query(ge=0, le=30)] = 0,
    after_version: Annotated[int, Query(ge=0)] | None = None,
) -> Any:
    view = await asyncio.to_thread(rt.rooms.reads.order_view, who.mchid, merchant_order_no)
    deadline = time.monotonic() + wait
    while after_version is not None and view["version"] <= after_version and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        view = await asyncio.to_thread(rt.rooms.reads.order_view, who.mchid, merchant_order_no)
    return view


@router.get("/orders", response_model=OrderList, summary="List orders, newest first")
def list_orders(
    who: Viewer,
    rt: Rt,
    request: Request,
    status: OrderStatus | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    transaction_id: Annotated[
        str | None, Query(max_length=64, description="WeChat's number: the one order it paid (WeChat asked if need be)")
    ] = None,
) -> Any:
    if transaction_id is not None:  # a payer's receipt or a bill line: found in the ledger, else asked of WeChat
        return {"orders": [rt.service.find_by_transaction(who.mchid, transaction_id)], "next_cursor": None}
    for name, value in (("created_from", created_from), ("created_to", created_to)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"{name} needs a UTC offset, e.g. 2026-11-22T00:00:00+08:00")
    await_projection(request, rt, "order_status")
    orders, next_cursor = rt.orders.list(
        who.mchid, status.value if status else None, created_from, created_to, limit, cursor
    )
    return {"orders": orders, "next_cursor": next_cursor}


@router.get(
    "/orders/{merchant_order_no}/stream", summary="Live status as Server-Sent Events", response_class=StreamingResponse
)
async def stream(merchant_order_no: str, who: Merchant, rt: Rt) -> StreamingResponse:
    first = await asyncio.to_thread(rt.rooms.reads.order_view, who.mchid, merchant_order_no)

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
            view = await asyncio.to_thread(rt.rooms.reads.order_view, who.mchid, merchant_order_no)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.post("/orders/{merchant_order_no}/sync", response_model=OrderView, summary='Ask WeChat now ("I have paid")')
def sync(merchant_order_no: str, who: Viewer, rt: Rt) -> Any:
    return rt.service.sync(who.mchid, merchant_order_no)


@router.post(
    "/orders/{merchant_order_no}/close",
    response_model=OrderView,
    summary="Close an unpaid order at WeChat and in the ledger",
)
def close(merchant_order_no: str, who: Merchant, rt: Rt) -> Any:
    return rt.rooms.reads.view_of(rt.service.close_order(who.mchid, merchant_order_no))


@router.post(
    "/orders/{merchant_order_no}/refunds",
    status_code=202,
    response_model=RefundView,
    summary="Refund part or all of a payment",
)
def create_refund(merchant_order_no: str, body: CreateRefund, who: Merchant, rt: Rt) -> Any:
    out_refund_no = body.out_refund_no or f"RF{secrets.token_hex(12)}"
    refund = rt.refunding.refund(body.request(who.mchid, merchant_order_no, out_refund_no))
    return refund_view(refund)


@router.post(
    "/orders/{merchant_order_no}/review/resolve",
    response_model=OrderView,
    summary="Settle an order in NEEDS_REVIEW: keep the money, or refund the duplicate or the surplus",
)
def resolve_review(merchant_order_no: str, body: ResolveReview, who: Merchant, rt: Rt) -> Any:
    order = rt.refunding.resolve_review(
        who.mchid, merchant_order_no, body.note, body.action, who.actor, body.out_trade_no
    )
    return rt.rooms.reads.view_of(order)


@router.post(
    "/orders/{merchant_order_no}/review/notes",
    response_model=OrderView,
    summary="File a note on an order (客服: what the payer said); changes no money",
)
def note_review(merchant_order_no: str, body: ReviewNote, who: Viewer, rt: Rt) -> Any:
    return rt.rooms.reads.view_of(rt.refunding.note_review(who.mchid, merchant_order_no, body.note, who.actor))


@router.post(
    "/refunds/{out_refund_no}/abnormal",
    response_model=RefundView,
    summary="Finish an ABNORMAL refund: re-send it to the merchant's bank card, or record it settled offline",
)
def handle_abnormal_refund(out_refund_no: str, body: HandleAbnormalRefund, who: Merchant, rt: Rt) -> Any:
    refund = rt.refunding.handle_abnormal_refund(who.mchid, out_refund_no, body.action, body.note, who.actor)
    return refund_view(refund)


@router.get("/refunds/{out_refund_no}", response_model=RefundView, summary="The refund view")
def get_refund(out_refund_no: str, who: Merchant, rt: Rt) -> Any:
    return refund_view(rt.ledger.get_refund(who.mchid, out_refund_no))


@router.post(
    "/wechat/miniprogram/login", response_model=MiniProgramSession, summary="Mini-program login: code → openid"
)
def miniprogram_login(body: MiniProgramLogin, who: Merchant, rt: Rt) -> Any:
    # The session key stays server-side, in the database: never returned, never logged.
    session = rt.payers.miniprogram_login(who.mchid, body.code, body.appid)
    return {"openid": session.openid, "unionid": session.unionid}


@router.post("/wechat/miniprogram/decrypt", summary="Mini-program encryptedData → its JSON (the session key's use)")
def miniprogram_decrypt(body: MiniProgramDecrypt, who: Merchant, rt: Rt) -> dict[str, Any]:
    # opened server-side with the session key kept at login; the key itself never leaves the ledger
    return rt.payers.miniprogram_decrypt(who.mchid, body.openid, body.encrypted_data, body.iv, body.appid)


@router.get(
    "/wechat/oauth/authorize-url",
    response_model=AuthorizeUrl,
    summary="公众号 page: where to send the payer's browser for their openid (snsapi_base)",
)
def oauth_authorize_url(
    who: Merchant,
    rt: Rt,
    redirect_uri: Annotated[str, Query(min_length=1, max_length=1024, description="your page WeChat returns to")],
    state: Annotated[str, Query(max_length=128, pattern=r"^[A-Za-z0-9_-]*$")] = "",
    appid: Annotated[str | None, Query(max_length=32)] = None,
) -> Any:
    url = rt.payers.oauth_authorize_url(who.mchid, redirect_uri, state, appid)
    return {"url": url, "appid": parse_qs(urlsplit(url).query)["appid"][0]}


@router.post("/wechat/oauth/openid", response_model=OAuthOpenId, summary="公众号 page: the code → the payer's openid")
def oauth_openid(body: OAuthCode, who: Merchant, rt: Rt) -> Any:
    openid, appid = rt.payers.oauth_openid(who.mchid, body.code, body.appid)
    return {"openid": openid, "appid": appid}
