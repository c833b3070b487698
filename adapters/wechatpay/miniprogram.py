"""The mini-program login API (``api.weixin.qq.com``): ``wx.login``'s code → the payer's openid.

``GET /sns/jscode2session`` answers plain JSON with an ``errcode`` on failure
(docs/wechatpay-protocol.md §7).  The session key is WeChat's secret for this
session: it is returned to the ledger only, never shown in ``repr`` or a log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from adapters.wechatpay.errors import WechatPayBusinessError, WechatPayUnavailable

DEFAULT_BASE_URL = "https://api.weixin.qq.com"
BUSY = (-1, 45011)  # WeChat is busy, or this appid asks too often: try again


@dataclass(frozen=True)
class MiniProgramSession:
    openid: str
    unionid: str | None
    session_key: str = field(repr=False)


def code_to_session(http: httpx.Client, base_url: str, appid: str, secret: str, code: str) -> MiniProgramSession:
    """Exchange a ``wx.login`` code; a busy WeChat is ``WechatPayUnavailable``, a refused code a business error."""
    try:
        answer = http.get(
            f"{base_url}/sns/jscode2session",
            params={"appid": appid, "secret": secret, "js_code": code, "grant_type": "authorization_code"},
        ).json()
    except (httpx.HTTPError, ValueError):
        raise WechatPayUnavailable("WeChat login is unreachable; try again") from None
    if not isinstance(answer, dict):
        raise WechatPayUnavailable("WeChat login answered something that is not JSON; try again")
    errcode = int(answer.get("errcode") or 0)
    if errcode in BUSY:
        raise WechatPayUnavailable(f"WeChat login is busy ({errcode}); try again", code=str(errcode))
    if errcode or not answer.get("openid"):
        raise WechatPayBusinessError(
            f"WeChat refused the code ({errcode} {answer.get('errmsg', '')}): ask wx.login again", code=str(errcode)
        )
    return MiniProgramSession(str(answer["openid"]), answer.get("unionid") or None, str(answer.get("session_key", "")))
