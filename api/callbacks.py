"""``POST /wechatpay/v3/notify``: verify, decrypt, apply — "success" only once stored (docs/wechatpay.md, "Callbacks")."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from adapters.wechatpay.callbacks import CallbackRejected
from adapters.wechatpay.errors import SignatureError
from api.deps import runtime
from application.callbacks import CallbackRefused

router = APIRouter(tags=["wechatpay"])
log = logging.getLogger("zhangben.callbacks")

# WeChat waits five seconds for the answer (https://pay.weixin.qq.com/docs/merchant/apis/h5-payment/payment-notice.html);
# past this we say FAIL so it retries.
ANSWER_BUDGET_SECONDS = 4.5


def _fail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": "FAIL", "message": message}, status_code=status)


@router.post("/wechatpay/v3/notify", status_code=204, include_in_schema=False)
async def notify(request: Request) -> Response:
    rt = runtime(request)
    body = await request.body()
    remote = request.client.host if request.client else ""
    metrics = request.app.state.metrics
    work = asyncio.to_thread(rt.callbacks.handle, dict(request.headers), body, path=request.url.path, remote=remote)
    try:
        await asyncio.wait_for(work, ANSWER_BUDGET_SECONDS)
    except SignatureError as exc:
        metrics.callbacks.labels("refused_signature").inc()
        return _fail(401, f"签名验证失败: {exc}")
    except (CallbackRejected, CallbackRefused) as exc:
        metrics.callbacks.labels("refused_content").inc()
        return _fail(400, f"通知内容无法接受: {exc}")
    except TimeoutError:
        metrics.callbacks.labels("timeout").inc()
        log.warning("callback took longer than %.1fs; WeChat will retry", ANSWER_BUDGET_SECONDS)
        return _fail(503, "处理超时，请重试")
    except Exception:  # never a traceback to WeChat; it retries on 5xx
        metrics.callbacks.labels("error").inc()
        log.exception("callback failed")
        return _fail(500, "处理失败，请重试")
    metrics.callbacks.labels("accepted").inc()
    return Response(status_code=204)
