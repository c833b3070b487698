"""WeChat's callbacks: verify, decrypt, apply — "success" only once stored (docs/wechatpay.md, "Callbacks").

``/wechatpay/v3/notify`` answers JSON (204 on success); the v2 routes answer
WeChat's XML (``SUCCESS`` only after the events are stored, ``FAIL`` with the
reason otherwise, which WeChat retries), with the same HTTP statuses as v3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from adapters.persistence import is_unavailable
from adapters.wechatpay.callbacks import CallbackRejected
from adapters.wechatpay.errors import SignatureError, WechatPayError
from adapters.wechatpay.v2_callbacks import SUCCESS_XML, fail_xml
from api.client_ip import source_ip, within
from api.deps import runtime
from api.errors import trip_gate
from application.callbacks import CallbackRefused, NotificationOutcome, RefusalsThrottled
from domain.audit import Arrival

router = APIRouter(tags=["wechatpay"])
log = logging.getLogger("zhangben.callbacks")

# WeChat waits five seconds for the answer (https://pay.weixin.qq.com/docs/merchant/apis/h5-payment/payment-notice.html);
# past this we say FAIL so it retries.
T = TypeVar("T")
ANSWER_BUDGET_SECONDS = 4.5


# WeChat's notifications are a few KB; a body past this is refused unread (and kept, cut, as any refusal).
MAX_CALLBACK_BYTES = 64 * 1024


def _fail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": "FAIL", "message": message}, status_code=status)


async def _bounded_body(request: Request) -> tuple[bytes, bool]:
    """The body, and whether it is whole: reading stops past ``MAX_CALLBACK_BYTES``."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_CALLBACK_BYTES:
            return b"".join(chunks), False
    return b"".join(chunks), True


def _arrival(request: Request, body: bytes) -> Arrival:
    """The callback as it arrived, with the merchant its path names (``…/{merchant}``; None on a shared path) and
    its source (the peer, or the address a trusted proxy forwarded for)."""
    remote = source_ip(request, runtime(request).settings.trusted_proxies)
    return Arrival(request.url.path, remote, dict(request.headers), body, request.path_params.get("merchant"))


async def _from_elsewhere(request: Request, arrival: Arrival) -> bool:
    """``[callbacks] allowed_networks`` is set and the source is outside it: the refusal is kept (throttled per
    source, like every refusal) and True.  Seed 000 §7: an extra guard, never instead of the signature."""
    networks = runtime(request).settings.callback_networks
    if not networks:
        return False
    if within(arrival.remote, networks):
        return False
    with contextlib.suppress(RefusalsThrottled):
        reason = f"source {arrival.remote} is not in [callbacks] allowed_networks"
        await asyncio.to_thread(runtime(request).callbacks.refused, arrival, reason)
    return True


async def _refuse_oversized(request: Request, body_start: bytes) -> int:
    """Keep the refusal of a body too large (bounded, throttled per source): 413, or 429 when throttled."""
    reason = f"body larger than {MAX_CALLBACK_BYTES} bytes"
    try:
        await asyncio.to_thread(runtime(request).callbacks.refused, _arrival(request, body_start), reason)
    except RefusalsThrottled:
        return 429
    return 413


@dataclass(frozen=True)
class Reply:
    """How one API version answers WeChat: success, and a failure with its HTTP status (it retries on FAIL)."""

    success: Callable[[], Response]
    failure: Callable[[int, str], Response]


V3 = Reply(lambda: Response(status_code=204), _fail)
V2 = Reply(lambda: _xml(SUCCESS_XML), lambda status, message: _xml(fail_xml(message), status))


# Each route also on the merchant's own path (``…/{merchant}``, the merchant's mchid or sub_mchid, as
# ``zhangben keys init`` writes notify_url): there a refusal is that merchant's, attributed before any signature
# is checked; on the shared path it names no merchant (the deployment's operator sees it).
@router.post("/wechatpay/v3/notify", status_code=204, include_in_schema=False)
@router.post("/wechatpay/v3/notify/{merchant}", status_code=204, include_in_schema=False)
async def notify(request: Request) -> Response:
    """API v3 notifications: signed JSON, the resource AES-256-GCM encrypted."""
    return await _notify(request, runtime(request).callbacks.handle_async, V3)


@router.post("/wechatpay/v2/notify", include_in_schema=False)
@router.post("/wechatpay/v2/notify/{merchant}", include_in_schema=False)
async def notify_v2(request: Request) -> Response:
    """API v2 pay results: signed XML (MD5 or HMAC-SHA256)."""
    return await _notify(request, runtime(request).callbacks.handle_v2_pay_async, V2)


@router.post("/wechatpay/v2/refund-notify", include_in_schema=False)
@router.post("/wechatpay/v2/refund-notify/{merchant}", include_in_schema=False)
async def refund_notify_v2(request: Request) -> Response:
    """API v2 refund results: ``req_info`` (AES-256-ECB under the MD5 of the API key)."""
    handle = runtime(request).callbacks.handle_v2_refund  # refunds are not a peak's bulk: on a thread

    async def on_thread(arrival: Arrival) -> NotificationOutcome:
        return await asyncio.to_thread(handle, arrival)

    return await _notify(request, on_thread, V2)


def busy(path: str) -> Response:
    """WeChat's failure answer for a callback this worker had no turn for (``api.admission``): it sends it again."""
    reply = V2 if path.startswith("/wechatpay/v2/") else V3
    return reply.failure(503, "系统繁忙，请稍后重试")


def database_unavailable(path: str) -> Response:
    """WeChat's own failure answer (it retries), for a callback that arrives while the database is down."""
    reply = V2 if path.startswith("/wechatpay/v2/") else V3
    return reply.failure(503, "数据库暂不可用，请重试")


async def _notify(
    request: Request, handle: Callable[[Arrival], Awaitable[NotificationOutcome]], reply: Reply
) -> Response:
    """Every notification, v3 or v2, the one way: read (bounded), handle within WeChat's budget, answer success
    only once stored, and each refusal with the status WeChat's rules give, counted by result.  A payment's
    success is handled on the event loop where the store allows (``Callbacks.handle_async``): no thread hop."""
    body, whole = await _bounded_body(request)
    metrics = request.app.state.metrics
    if not whole:
        metrics.callbacks.labels("refused_content").inc()
        return reply.failure(await _refuse_oversized(request, body), "通知内容过大")
    arrival = _arrival(request, body)  # once: the source check and the handling read the same
    if await _from_elsewhere(request, arrival):
        metrics.callbacks.labels("refused_source").inc()
        return reply.failure(403, "来源地址不在允许的网络内")
    try:
        await within_budget(handle(arrival))
    except RefusalsThrottled as exc:
        metrics.callbacks.labels("refused_throttled").inc()
        return reply.failure(429, str(exc))
    except SignatureError as exc:
        metrics.callbacks.labels("refused_signature").inc()
        return reply.failure(401, f"签名验证失败: {exc}")
    except (CallbackRejected, CallbackRefused) as exc:
        metrics.callbacks.labels("refused_content").inc()
        return reply.failure(400, f"通知内容无法接受: {exc}")
    except TimeoutError as exc:
        metrics.callbacks.labels("timeout").inc()
        log.warning("callback took longer than %.1fs; WeChat will retry", ANSWER_BUDGET_SECONDS)
        trip_gate(request, exc)  # a database that hangs (a frozen primary) is checked like one that fails
        return reply.failure(503, "处理超时，请重试")
    except Exception as exc:  # never a traceback to WeChat; it retries on a failure
        if is_unavailable(exc):
            metrics.callbacks.labels("database_unavailable").inc()
            trip_gate(request, exc)
            return reply.failure(503, "数据库暂不可用，请重试")
        metrics.callbacks.labels("error").inc()
        log.exception("callback failed")
        return reply.failure(500, "处理失败，请重试")
    metrics.callbacks.labels("accepted").inc()
    return reply.success()


async def within_budget(work: Awaitable[T]) -> T:
    """``work``'s result within WeChat's budget, else ``TimeoutError`` at once.  What overran is cancelled and
    left to end by itself: cancelling a query on a frozen server (SIGSTOP: its kernel still acknowledges) waits
    on that server too, ten seconds past WeChat's five."""
    task = asyncio.ensure_future(work)
    await asyncio.wait({task}, timeout=ANSWER_BUDGET_SECONDS)
    if not task.done():
        task.cancel()
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        raise TimeoutError(f"no answer within {ANSWER_BUDGET_SECONDS}s")
    return task.result()


def _xml(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/xml")


@router.post("/wechatpay/v2/native-callback", include_in_schema=False)
async def native_callback(request: Request) -> Response:
    """Native mode 1: a payer scanned a printed product code; answer with a signed prepay."""
    rt = runtime(request)
    body, whole = await _bounded_body(request)
    if not whole:
        return _xml(fail_xml("请求内容过大"), await _refuse_oversized(request, body))
    arrival = _arrival(request, body)
    if await _from_elsewhere(request, arrival):
        return _xml(fail_xml("来源地址不在允许的网络内"), 403)
    try:
        answer = await within_budget(asyncio.to_thread(rt.products.scan, arrival))
    except RefusalsThrottled as exc:
        return _xml(fail_xml(str(exc)), 429)
    except SignatureError as exc:
        return _xml(fail_xml(f"签名验证失败: {exc}"), 401)
    except WechatPayError as exc:
        return _xml(fail_xml(f"请求无法接受: {exc}"), 400)
    except TimeoutError:
        return _xml(fail_xml("处理超时，请重试"), 503)
    except Exception:  # never a traceback to WeChat
        log.exception("native callback failed")
        return _xml(fail_xml("处理失败，请重试"), 500)
    return _xml(answer)
