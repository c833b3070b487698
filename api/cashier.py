"""``GET /pay/{out_trade_no}?t=…``: the PC cashier page (docs/api.md).

A payer has no API key, so these routes take the link's capability instead:
``t``, minted with the order (``cashier_url`` in the create answer, see
application/cashier_links.py).  Without a ``t`` that opens the order — missing,
forged, another order's, expired — every route is a 404, the same as an
unknown payment: ``out_trade_no`` alone opens nothing.  The page shows only what
the payer needs: what is being paid, the QR code, the countdown, the live
status.  The "I have paid" button asks WeChat (never trusts the page); a
refreshed QR is a new payment attempt for the same order, under the same ``t``.
"""

from __future__ import annotations

import asyncio
import html
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import segno
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from adapters.wechatpay.beijing import beijing_iso
from api.deps import runtimes
from bootstrap.wiring import Runtime
from domain.errors import PaymentNotFound
from domain.money import fen_to_yuan
from domain.payment import Payment
from domain.requests import NewAttempt

router = APIRouter(tags=["cashier"], include_in_schema=False)
TEMPLATE = (Path(__file__).parent / "templates" / "cashier.html").read_text(encoding="utf-8")
STATUS_TEXTS = {
    "CREATED": "等待支付",
    "PAYING": "请使用微信扫一扫付款",
    "PAID": "支付成功",
    "PARTIALLY_REFUNDED": "支付成功（部分退款）",
    "REFUNDED": "已退款",
    "CLOSED": "订单已关闭",
    "EXPIRED": "二维码已过期，请刷新",
    "NEEDS_REVIEW": "支付已收到，正在核对",
}
SYNC_INTERVAL_SECONDS = 3.0  # "I have paid" may not hammer WeChat
# seed 000: "如果支付 1-2 分钟未成功，显示'如已付款请稍等'并持续检测" — after this long the page says so and asks WeChat
PATIENCE_SECONDS = 90
# a QR code is renewed by the page this long before it expires, and the ledger accepts a renewal in the last minute
RENEW_AHEAD_SECONDS = 20
RENEW_WINDOW = timedelta(seconds=60)
_last_sync: dict[str, float] = {}
_sync_lock = threading.Lock()


Token = Annotated[str, Query(alias="t", max_length=128, description="the capability in the cashier_url")]


def _payment(request: Request, out_trade_no: str, token: str) -> tuple[Runtime, Payment]:
    """The payment and its partition's runtime, if ``token`` opens its order; else the same 404 as for a payment
    that does not exist."""
    try:
        rt, payment = runtimes(request).payment(out_trade_no)
    except PaymentNotFound:
        raise HTTPException(404, "no such payment") from None
    if not rt.cashier.opens(token, payment):
        raise HTTPException(404, "no such payment")
    return rt, payment


def _status(rt: Runtime, payment: Payment) -> dict[str, Any]:
    """What the page follows: the order's status, its current attempt (a renewal elsewhere moves it), and once paid
    the signed way back to the shop (``return_to``)."""
    view = rt.rooms.reads.order_view(payment.mchid, payment.merchant_order_no)
    current = view["payments"][-1]["out_trade_no"] if view["payments"] else payment.out_trade_no
    state = {
        "status": view["status"],
        "version": view["version"],
        "expire_at": beijing_iso(payment.expire_at),
        "current": current,
    }
    back = rt.cashier.return_to(view)
    return state | ({"return_to": back} if back else {})


@router.get("/pay/{out_trade_no}", response_class=HTMLResponse)
def cashier_page(out_trade_no: str, request: Request, t: Token = "") -> HTMLResponse:
    rt, payment = _payment(request, out_trade_no, t)
    state = _status(rt, payment)
    order = rt.ledger.get_order(payment.mchid, payment.merchant_order_no)
    qr = segno.make(payment.code_url, error="m").svg_inline(border=2, omitsize=True) if payment.code_url else ""
    page = TEMPLATE.format(
        description=html.escape(payment.description),
        amount_yuan=fen_to_yuan(payment.amount_fen),
        qr_svg=qr,
        out_trade_no=html.escape(payment.out_trade_no),
        merchant_order_no=html.escape(payment.merchant_order_no),
        version=state["version"],
        expire_at=html.escape(state["expire_at"]),
        status=state["status"],
        status_text=STATUS_TEXTS.get(state["status"], state["status"]),
        status_texts=json.dumps(STATUS_TEXTS, ensure_ascii=False),
        token=html.escape(t),
        # relative to the server's clock, so a payer's computer whose clock is off counts down right
        items="".join(
            f"<li>{html.escape(i.name)} × {i.quantity}<span>¥{fen_to_yuan(i.total_fen)}</span></li>"
            for i in order.items
        ),
        expires_in=max(0, int((payment.expire_at - datetime.now(UTC)).total_seconds())),
        waited=max(0, int((datetime.now(UTC) - order.created_at).total_seconds())),
        renewable="1" if payment.expire_at < order.deadline else "0",  # renewed shortly before it expires
        patience=PATIENCE_SECONDS,
        renew_ahead=RENEW_AHEAD_SECONDS,
    )
    # the link is a capability: not cached, not sent on in a Referer
    return HTMLResponse(page, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@router.get("/pay/{out_trade_no}/status")
async def cashier_status(
    out_trade_no: str,
    request: Request,
    t: Token = "",
    wait: Annotated[int, Query(ge=0, le=30)] = 0,
    after_version: Annotated[int, Query(ge=0)] | None = None,
) -> dict[str, Any]:
    rt, payment = await asyncio.to_thread(_payment, request, out_trade_no, t)
    state = await asyncio.to_thread(_status, rt, payment)
    deadline = time.monotonic() + wait
    while after_version is not None and state["version"] <= after_version and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        state = await asyncio.to_thread(_status, rt, payment)
    return state


@router.post("/pay/{out_trade_no}/sync")
def cashier_sync(out_trade_no: str, request: Request, t: Token = "") -> dict[str, Any]:
    rt, payment = _payment(request, out_trade_no, t)
    with _sync_lock:
        recent = time.monotonic() - _last_sync.get(out_trade_no, -1e9) < SYNC_INTERVAL_SECONDS
        if not recent:
            _last_sync[out_trade_no] = time.monotonic()
    if not recent:
        rt.service.sync(payment.mchid, payment.merchant_order_no)
    return _status(rt, payment)


@router.post("/pay/{out_trade_no}/renew")
def cashier_renew(out_trade_no: str, request: Request, t: Token = "") -> dict[str, Any]:
    """A new QR code shortly before this one expires, while the order's deadline is later: a new attempt of the same
    order, this one closed at WeChat first (one payable attempt per order).  Asked twice (two tabs), the second
    gets the attempt the first opened."""
    rt, payment = _payment(request, out_trade_no, t)
    order = rt.ledger.get_order(payment.mchid, payment.merchant_order_no)
    if order.attempts[-1] != payment.out_trade_no:
        return {"out_trade_no": order.attempts[-1]}
    if payment.expire_at >= order.deadline:
        raise HTTPException(409, "this QR code lasts until the order's deadline: it is not renewed")
    if payment.expire_at - datetime.now(UTC) > RENEW_WINDOW:
        raise HTTPException(409, "this QR code is not about to expire yet")
    checkout = rt.service.new_payment(NewAttempt(payment.mchid, payment.merchant_order_no, "native"))
    return {"out_trade_no": checkout.payment.out_trade_no}


@router.post("/pay/{out_trade_no}/refresh")
def cashier_refresh(out_trade_no: str, request: Request, t: Token = "") -> dict[str, Any]:
    """A new QR code once this one has expired: a new attempt of the same order (the same ``t`` opens it)."""
    rt, payment = _payment(request, out_trade_no, t)
    if datetime.now(UTC) < payment.expire_at:
        raise HTTPException(409, "this QR code has not expired yet")
    checkout = rt.service.new_payment(NewAttempt(payment.mchid, payment.merchant_order_no, "native"))
    return {"out_trade_no": checkout.payment.out_trade_no}
