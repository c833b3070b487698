"""The mini-program login API (``api.weixin.qq.com``): ``wx.login``'s code → the payer's openid.

``GET /sns/jscode2session`` answers plain JSON with an ``errcode`` on failure
(docs/wechatpay-protocol.md §7).  The session key is WeChat's secret for this
session: it is returned to the ledger only, never shown in ``repr`` or a log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from adapters.wechatpay.errors import WechatPayBusinessError, WechatPayUnavailable

DEFAULT_BASE_URL = "https://api.weixin.qq.com"
BUSY = (-1, 45011)  # WeChat is busy, or this appid asks too often: try again


@dataclass(frozen=True)
class MiniProgramSession:
    openid: str
    unionid: str | None
    session_key: str = field(repr=False)


def sns_get(http: httpx.Client, url: str, params: dict[str, str], what: str, again: str) -> dict[str, Any]:
    """A GET to one of WeChat's ``/sns`` APIs, which answer JSON with an ``errcode`` on failure.

    Unreachable or busy is ``WechatPayUnavailable`` (try again); a refused code
    is a business error whose message says what to do (``again``).  The answer
    has an ``openid`` whenever this returns.
    """
    try:
        answer = http.get(url, params=params).json()
    except (httpx.HTTPError, ValueError):
        raise WechatPayUnavailable(f"{what} is unreachable; try again") from None
    if not isinstance(answer, dict):
        raise WechatPayUnavailable(f"{what} answered something that is not JSON; try again")
    errcode = int(answer.get("errcode") or 0)
    if errcode in BUSY:
        raise WechatPayUnavailable(f"{what} is busy ({errcode}); try again", code=str(errcode))
    if errcode or not answer.get("openid"):
        raise WechatPayBusinessError(
            f"WeChat refused the code ({errcode} {answer.get('errmsg', '')}): {again}", code=str(errcode)
        )
    return answer


def code_to_session(http: httpx.Client, base_url: str, appid: str, secret: str, code: str) -> MiniProgramSession:
    """Exchange a ``wx.login`` code; a busy WeChat is ``WechatPayUnavailable``, a refused code a business error."""
    answer = sns_get(
        http,
        f"{base_url}/sns/jscode2session",
        {"appid": appid, "secret": secret, "js_code": code, "grant_type": "authorization_code"},
        "WeChat login",
        "ask wx.login again",
    )
    return MiniProgramSession(str(answer["openid"]), answer.get("unionid") or None, str(answer.get("session_key", "")))
