"""``/console``: the people around the ledger settle, in a browser, what the machine cannot (docs/console.md).

Server-rendered pages (Jinja2, a few lines of vanilla JS), in Chinese.  One logs
in with an API key; the key is kept in an HttpOnly, SameSite=Strict cookie and
checked on every request exactly as the API checks it (a revoked key is logged
out at once, in every worker).  Every form carries a CSRF token bound to the
key (HMAC of it), so a page of another site can post nothing.  Each page shows
only what the key's role may see, and each action calls the same use case the
API calls — a forged form is refused by the same role check (403).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from adapters.exports import FORMATS, render
from adapters.wechatpay.beijing import BEIJING, shown
from adapters.wechatpay.errors import WechatPayError
from api.deps import runtimes
from application.finance_exports import EXPORTS, FUND_FLOW_ITEMS, RESULTS, export_workbook
from bootstrap.wiring import Runtime
from domain.apikey import OPERATOR, Principal
from domain.errors import InvalidInput, LedgerError, NotFound
from domain.money import fen_to_yuan
from domain.requests import NewRefund
from domain.status import ORDER_STATUS_NAMES, OrderStatus
from projections.business_events import event_id

# What a person's action may run into and is told on the page: the ledger's refusal, or WeChat's (NOT_ENOUGH, …)
REFUSED = (LedgerError, WechatPayError)

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates" / "console")
templates.env.filters["yuan"] = lambda fen: "" if fen is None else fen_to_yuan(int(fen))
templates.env.filters["beijing"] = shown
templates.env.filters["pretty"] = lambda value: json.dumps(value, ensure_ascii=False, indent=2, default=str)

COOKIE = "zb_console"
SESSION_SECONDS = 8 * 3600
# What each role finds in the menu, and may open: (path, 中文)
MENU = {
    "merchant": [("/console", "订单"), ("/console/reviews", "待处理"), ("/console/webhooks", "推送")],
    "support": [("/console", "订单"), ("/console/reviews", "待处理")],
    "auditor": [("/console", "订单"), ("/console/refused", "拒绝的回调")],
    "finance": [("/console/reconciliation", "对账"), ("/console/exports", "导出")],
    "operator": [("/console/refused", "拒绝的回调（全部）")],
}
ORDER_READERS = ("merchant", "support", "auditor")
REVIEW_QUEUE_MAX = 1000
REASON_NAMES = {"duplicate_payment": "重复支付", "amount_mismatch": "金额不符", "paid_after_close": "关单后支付"}


class Session:
    """Who is logged in: the principal and the token their forms must carry."""

    def __init__(self, who: Principal, key: str) -> None:
        self.who = who
        self.csrf = csrf_token(key)


def _rt(request: Request, session: Session) -> Runtime:
    """The runtime of the session's merchant's partition (an operator's, naming none: the first partition's)."""
    return runtimes(request).at(session.who.mchid)


def csrf_token(key: str) -> str:
    """Bound to the session's key: computable only by someone who holds the key."""
    return hmac.new(key.encode(), b"zhangben console csrf", hashlib.sha256).hexdigest()[:40]


def _session(request: Request) -> Session | None:
    key = request.cookies.get(COOKIE)
    if not key:
        return None
    who = runtimes(request).keys.authenticate(key)
    return Session(who, key) if who is not None else None


class LoginRequired(Exception):
    pass


class Forbidden(Exception):
    """A page or action the key's role may not use: a 403 page (not JSON: a person reads it)."""


def _require(request: Request, *roles: str) -> Session:
    """A page: logged in, in one of ``roles``."""
    session = _session(request)
    if session is None:
        raise LoginRequired
    return _in_role(session, roles, "页面")


def _checked(request: Request, csrf: str, *roles: str) -> Session:
    """A form post: logged in, in one of ``roles``, and carrying this session's CSRF token."""
    session = _session(request)
    if session is None or not hmac.compare_digest(csrf, session.csrf):
        raise Forbidden("表单已失效（CSRF 校验失败），请刷新页面后重试")
    return _in_role(session, roles, "操作")


def _in_role(session: Session, roles: tuple[str, ...], what: str) -> Session:
    if roles and session.who.role not in roles:
        raise Forbidden(f"此{what}需要角色：{'、'.join(roles)}（当前：{session.who.role}）")
    return session


def _page(request: Request, name: str, session: Session | None, **context: Any) -> HTMLResponse:
    menu = MENU.get(session.who.role, []) if session else []
    return templates.TemplateResponse(
        request,
        name,
        {"session": session, "menu": menu, "status_names": ORDER_STATUS_NAMES, "reason_names": REASON_NAMES} | context,
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"},
    )


def _back(path: str, message: str = "") -> RedirectResponse:
    return RedirectResponse(path + (f"{'&' if '?' in path else '?'}msg={quote(message)}" if message else ""), 303)


def install(app: FastAPI) -> None:
    """The console's router, its login redirect and its 403 page."""
    app.include_router(router)
    app.add_exception_handler(LoginRequired, _to_login)
    app.add_exception_handler(Forbidden, _forbidden)


async def _to_login(request: Request, exc: Exception) -> Response:
    return RedirectResponse(f"/console/login?next={quote(request.url.path)}", 303)


async def _forbidden(request: Request, exc: Exception) -> Response:
    page = _page(request, "forbidden.html", _session(request), reason=str(exc))
    page.status_code = 403
    return page


# -- login -----------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, next_page: Annotated[str, Query(alias="next", max_length=200)] = "/console", msg: str = ""
) -> HTMLResponse:
    return _page(request, "login.html", None, next=_inside(next_page), msg=msg)


def _inside(path: str) -> str:
    """Where to go after login: a console page only (never another site)."""
    return path if path.startswith("/console") and not path.startswith("/console//") else "/console"


@router.post("/login")
def login(
    request: Request,
    key: Annotated[str, Form(max_length=200)],
    next_page: Annotated[str, Form(alias="next")] = "/console",
) -> Response:
    who = runtimes(request).keys.authenticate(key.strip())
    if who is None:
        return _page(request, "login.html", None, next=_inside(next_page), msg="API key 无效、已撤销或已过期")
    home = _inside(next_page) if who.role in ORDER_READERS else MENU[who.role][0][0]
    answer = RedirectResponse(home, 303)
    answer.set_cookie(
        COOKIE,
        key.strip(),
        max_age=SESSION_SECONDS,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return answer


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    _checked(request, csrf)
    answer = RedirectResponse("/console/login?msg=" + quote("已退出"), 303)
    answer.delete_cookie(COOKIE, path="/console")
    return answer


# -- orders ----------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def orders(
    request: Request,
    q: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(max_length=20)] = "",
    day_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    day_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Search: a number (商户订单号, out_trade_no or 微信支付订单号) opens its order; else the list, filtered."""
    session = _require(request, *ORDER_READERS)
    rt = _rt(request, session)
    if q:
        found = rt.rooms.reads.find_order_no(session.who.mchid, q)
        if found is None and q.strip().isdigit() and len(q.strip()) >= 20:  # a 微信支付订单号 the ledger never saw
            found = _asked_of_wechat(rt, session.who.mchid, q.strip())
        if found is not None:
            return RedirectResponse(f"/console/orders/{quote(found)}", 303)
        return _page(
            request,
            "orders.html",
            session,
            orders=[],
            q=q,
            status=status,
            day_from=day_from,
            day_to=day_to,
            next_cursor=None,
            msg=f"没有找到 {q}",
        )
    start, last = _day_start(day_from), _day_start(day_to)
    end = last + timedelta(days=1) if last else None
    found_orders, next_cursor = rt.orders.list(
        session.who.mchid, status if status in ORDER_STATUS_NAMES else None, start, end, 50, cursor
    )
    return _page(
        request,
        "orders.html",
        session,
        orders=found_orders,
        q=q,
        status=status,
        day_from=day_from,
        day_to=day_to,
        next_cursor=next_cursor,
        msg="",
    )


def _asked_of_wechat(rt: Runtime, mchid: str, transaction_id: str) -> str | None:
    """The order WeChat says ``transaction_id`` paid (its answer applied, so a payment never heard of is recorded)."""
    try:
        return str(rt.service.find_by_transaction(mchid, transaction_id)["merchant_order_no"])
    except (NotFound, InvalidInput, WechatPayError):
        return None


def _day_start(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), BEIJING)
    except ValueError:
        raise HTTPException(422, f"日期格式应为 YYYY-MM-DD：{text}") from None


@router.get("/orders/{merchant_order_no}", response_class=HTMLResponse)
def order_page(request: Request, merchant_order_no: str, as_of: str = "", msg: str = "") -> Response:
    """The order: its state (now, or as of a moment of its timeline), every event, payments, refunds, actions."""
    session = _require(request, *ORDER_READERS)
    rt = _rt(request, session)
    mchid = session.who.mchid
    moment = None
    if as_of:
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            raise HTTPException(422, f"as_of 不是时间：{as_of}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=BEIJING)  # a time without an offset is Beijing time, as everywhere
    view = (
        rt.rooms.reads.order_state_as_of(mchid, merchant_order_no, moment)
        if moment
        else rt.rooms.reads.order_view(mchid, merchant_order_no)
    )
    events = rt.rooms.reads.order_history(mchid, merchant_order_no)
    captured = [p for p in view["payments"] if p.get("transaction_id")]
    return _page(
        request,
        "order.html",
        session,
        view=view,
        events=[e.as_json() for e in events],
        as_of=moment.isoformat() if moment else "",
        captured=captured,
        msg=msg,
        can_refund=session.who.role == "merchant",
        can_note=session.who.role in ("merchant", "support"),
        can_sync=session.who.role in ("merchant", "support"),
        raw=session.who.role == "auditor",
        refund_no="CR" + secrets.token_hex(10),
    )


@router.post("/orders/{merchant_order_no}/resolve")
def resolve(
    request: Request,
    merchant_order_no: str,
    action: Annotated[str, Form()],
    note: Annotated[str, Form(max_length=500)],
    out_trade_no: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    session = _checked(request, csrf, "merchant")
    path = f"/console/orders/{quote(merchant_order_no)}"
    try:
        _rt(request, session).refunding.resolve_review(
            session.who.mchid, merchant_order_no, note, action, session.who.actor, out_trade_no or None
        )
    except REFUSED as exc:
        return _back(path, f"未能处理：{exc}")
    return _back(path, "已处理：" + ("退款已被微信受理" if action == "refund" else "保留款项"))


@router.post("/orders/{merchant_order_no}/refund")
def refund(
    request: Request,
    merchant_order_no: str,
    amount_fen: Annotated[int, Form(gt=0)],
    out_trade_no: Annotated[str, Form()] = "",
    reason: Annotated[str, Form(max_length=80)] = "",
    out_refund_no: Annotated[str, Form(max_length=64)] = "",  # minted with the page: a second click is the same refund
    csrf: Annotated[str, Form()] = "",
) -> Response:
    session = _checked(request, csrf, "merchant")
    path = f"/console/orders/{quote(merchant_order_no)}"
    number = out_refund_no if re.fullmatch(r"CR[0-9a-f]{20}", out_refund_no) else "CR" + secrets.token_hex(10)
    try:
        refund = NewRefund(session.who.mchid, merchant_order_no, number, amount_fen, reason, out_trade_no or None)
        _rt(request, session).refunding.refund(refund)
    except REFUSED as exc:
        return _back(path, f"未能退款：{exc}")
    return _back(path, f"退款 {number} 已提交")


@router.post("/orders/{merchant_order_no}/sync")
def sync(request: Request, merchant_order_no: str, csrf: Annotated[str, Form()] = "") -> Response:
    session = _checked(request, csrf, "merchant", "support")
    _rt(request, session).service.sync(session.who.mchid, merchant_order_no)
    return _back(f"/console/orders/{quote(merchant_order_no)}", "已向微信查询")


@router.post("/orders/{merchant_order_no}/note")
def note(
    request: Request,
    merchant_order_no: str,
    text: Annotated[str, Form(max_length=500)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    session = _checked(request, csrf, "merchant", "support")
    path = f"/console/orders/{quote(merchant_order_no)}"
    try:
        _rt(request, session).refunding.note_review(session.who.mchid, merchant_order_no, text, session.who.actor)
    except REFUSED as exc:
        return _back(path, f"未能记录：{exc}")
    return _back(path, "备注已记录")


@router.post("/refunds/{out_refund_no}/abnormal")
def abnormal_refund(
    request: Request,
    out_refund_no: str,
    action: Annotated[str, Form()],
    note: Annotated[str, Form(max_length=500)],
    order: Annotated[str, Form(max_length=64)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    session = _checked(request, csrf, "merchant")
    path = f"/console/orders/{quote(order)}"
    try:
        _rt(request, session).refunding.handle_abnormal_refund(
            session.who.mchid, out_refund_no, action, note, session.who.actor
        )
    except REFUSED as exc:
        return _back(path, f"未能处理：{exc}")
    return _back(path, "异常退款已处理")


@router.get("/reviews", response_class=HTMLResponse)
def reviews(request: Request) -> Response:
    """NEEDS_REVIEW, oldest first: the queue a person works through."""
    session = _require(request, "merchant", "support")
    queue = _rt(request, session).orders.oldest(session.who.mchid, OrderStatus.NEEDS_REVIEW.value, REVIEW_QUEUE_MAX)
    return _page(request, "reviews.html", session, queue=queue)


# -- finance ---------------------------------------------------------------------------------


@router.get("/reconciliation", response_class=HTMLResponse)
def reconciliation(
    request: Request, day: Annotated[str, Query(alias="date", max_length=10)] = "", msg: str = ""
) -> Response:
    session = _require(request, "finance")
    rt = _rt(request, session)
    bill_date = _date(day) if day else _latest_day(rt, session.who.mchid)
    report = rt.finance.report(session.who.mchid, bill_date)
    return _page(
        request,
        "reconciliation.html",
        session,
        report=report,
        day=bill_date.isoformat(),
        results=RESULTS,
        msg=msg,
        fund_flow=rt.finance.fund_flow_if_imported(session.who.mchid, bill_date),
        fund_flow_items=FUND_FLOW_ITEMS,
    )


def _latest_day(rt: Runtime, mchid: str) -> date:
    days = [d for m, d, _, _ in rt.reconciliation.latest_results() if m == mchid]
    return date.fromisoformat(days[0]) if days else datetime.now(BEIJING).date() - timedelta(days=1)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise HTTPException(422, f"日期格式应为 YYYY-MM-DD：{text}") from None


@router.post("/reconciliation/{day}/differences/{difference_id}/acknowledge")
def acknowledge(
    request: Request,
    day: str,
    difference_id: str,
    text: Annotated[str, Form(max_length=500)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    session = _checked(request, csrf, "finance")
    path = f"/console/reconciliation?date={day}"
    try:
        result = _rt(request, session).finance.acknowledge(
            session.who.mchid, _date(day), difference_id, text, session.who.actor
        )
    except LedgerError as exc:
        return _back(path, f"未能确认：{exc}")
    return _back(path, "已确认" + ("，当日已关账" if result["closed"] else ""))


@router.get("/exports", response_class=HTMLResponse)
def exports(request: Request) -> Response:
    session = _require(request, "finance")
    yesterday = (datetime.now(BEIJING).date() - timedelta(days=1)).isoformat()
    return _page(request, "exports.html", session, yesterday=yesterday)


@router.get("/exports/{what}.{fmt}")
def export_file(
    request: Request, what: str, fmt: str, day: Annotated[str, Query(alias="date", max_length=10)], to: str = ""
) -> Response:
    """The same files as ``zhangben export`` (application/finance_exports.py)."""
    session = _require(request, "finance")
    if what not in EXPORTS or fmt not in FORMATS:
        raise HTTPException(404, "没有这种导出")
    start, end = _date(day), _date(to) if to else _date(day)
    if end < start:
        raise HTTPException(422, "结束日期早于开始日期")
    rt = _rt(request, session)
    book = export_workbook(what, rt.finance, rt.orders.created_on, [session.who.mchid], start, end)
    media = (
        "text/csv; charset=utf-8"
        if fmt == "csv"
        else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    name = f"{what}-{start}" + (f"_{end}" if end != start else "") + f".{fmt}"
    return Response(
        render(book, fmt), media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


# -- audit and webhooks ----------------------------------------------------------------------


@router.get("/refused", response_class=HTMLResponse)
def refused(request: Request, reason: Annotated[str, Query(max_length=100)] = "") -> Response:
    session = _require(request, "auditor", OPERATOR)
    found = runtimes(request).refused_callbacks_seen_by(
        None if session.who.role == OPERATOR else session.who.mchid, reason
    )
    return _page(request, "refused.html", session, refused=list(reversed(found[-200:])), reason=reason)


@router.get("/webhooks", response_class=HTMLResponse)
def webhooks(request: Request) -> Response:
    session = _require(request, "merchant")
    rt = _rt(request, session)
    endpoints = rt.webhooks.endpoints(session.who.mchid)
    attempts = rt.webhooks.store.recent_attempts([e.id for e in endpoints])
    for attempt in attempts:
        attempt["event_id"] = event_id(attempt["seq"], rt.number)
    return _page(request, "webhooks.html", session, endpoints=endpoints, attempts=attempts)
